//! POSIX message queues (Linux): thin safe wrappers over `mq_open` and
//! friends, through the `nix` crate.
//!
//! A switchyard server owns one queue per service, named by [`queue_name`]
//! (`/sy-<uid>-<service>`), created with mode 0600 by
//! [`create_exclusive`]. Clients open it with [`open_send`]. Both ends check
//! that the queue belongs to this user with mode 0600 before they use it: a
//! queue someone else made is refused with [`MqError::Foreign`], never
//! taken over.
//!
//! Every descriptor is non-blocking; waiting is the caller's business (on
//! Linux a queue descriptor works with `poll`/`epoll`, see
//! [`transport::mqueue`](crate::transport::mqueue)). Limits come from
//! `/proc/sys/fs/mqueue` through [`limits`], never from constants.
//!
//! The one `unsafe` block registers a queue descriptor with tokio's reactor
//! ([`OwnedQueue::into_async`], [`SendQueue::into_async`]), whose API is
//! `unsafe` because it cannot check that the descriptor stays open.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_attr_member_t};
use nix::sys::stat::Mode;

/// The permission bits every switchyard queue has: owner read and write.
pub const QUEUE_MODE: u32 = 0o600;

/// The highest priority a message may carry (`MQ_PRIO_MAX - 1` on Linux).
/// Higher priorities are received first.
pub const MAX_PRIORITY: u32 = 32_767;

/// The longest queue name after its leading `/` (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Where Linux shows message queues as files, when the mqueue file system is
/// mounted.
pub const MQUEUE_DIR: &str = "/dev/mqueue";

const LIMITS_DIR: &str = "/proc/sys/fs/mqueue";

/// Why a message-queue operation failed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqError {
    /// This system has no POSIX message queues.
    #[error(
        "POSIX message queues are not available here ({reason}); one-way calls use the connection instead"
    )]
    Unsupported {
        /// What showed it.
        reason: String,
    },
    /// The name is not a valid queue name.
    #[error(
        "invalid message queue name {name:?}: {reason}; names are built by sys::mqueue::queue_name"
    )]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No queue has this name.
    #[error("message queue {name} does not exist; the server creates it when it starts")]
    NotFound {
        /// The queue's name.
        name: String,
    },
    /// A queue with this name exists but was not made by switchyard for this
    /// user: another owner, or other permissions.
    #[error(
        "message queue {name} exists but belongs to uid {owner_uid} with mode {mode:04o}, not to this user \
         (uid {our_uid}) with mode 0600, so it was not created by switchyard for this user and will not be used; \
         if it is stale, its owner or root can remove it (rm {MQUEUE_DIR}{name}, or mq_unlink), \
         otherwise choose another service name"
    )]
    Foreign {
        /// The queue's name.
        name: String,
        /// Its owner's user id.
        owner_uid: u32,
        /// Its permission bits.
        mode: u32,
        /// This process's user id.
        our_uid: u32,
    },
    /// A queue with this name exists and this user may not open it, so it
    /// belongs to someone else.
    #[error(
        "message queue {name} exists but this user (uid {our_uid}) may not open it, so it belongs to someone else \
         and will not be used; its owner or root can remove it (rm {MQUEUE_DIR}{name}), \
         otherwise choose another service name"
    )]
    PermissionDenied {
        /// The queue's name.
        name: String,
        /// This process's user id.
        our_uid: u32,
    },
    /// The requested size is beyond what the system allows.
    #[error(
        "a queue of {max_messages} messages of {message_size} bytes exceeds this system's limits \
         ({msg_max} messages of {msgsize_max} bytes, {LIMITS_DIR}/msg_max and msgsize_max); \
         ask for less or raise the sysctls fs.mqueue.msg_max / fs.mqueue.msgsize_max"
    )]
    ExceedsLimits {
        /// Messages asked for.
        max_messages: usize,
        /// Message size asked for.
        message_size: usize,
        /// The system's `msg_max`.
        msg_max: usize,
        /// The system's `msgsize_max`.
        msgsize_max: usize,
    },
    /// A per-user or system-wide budget is used up.
    #[error(
        "cannot create message queue {name}: {source}; the per-user byte budget (ulimit -q, RLIMIT_MSGQUEUE), \
         the number of queues (fs.mqueue.queues_max) or open files is exhausted; \
         remove stale queues (switchyard services --prune) or raise the limit"
    )]
    ResourceLimit {
        /// The queue's name.
        name: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// The queue holds as many messages as it can; retry once a message
    /// has been received.
    #[error("message queue {name} is full ({max_messages} messages)")]
    Full {
        /// The queue's name.
        name: String,
        /// Its capacity.
        max_messages: usize,
    },
    /// The queue is empty; wait for readability and retry.
    #[error("message queue {name} is empty")]
    WouldBlock {
        /// The queue's name.
        name: String,
    },
    /// The message is longer than the queue's message size.
    #[error(
        "a message of {len} bytes does not fit message queue {name} (at most {max} bytes); send it over the connection"
    )]
    TooLarge {
        /// The queue's name.
        name: String,
        /// The message's length.
        len: usize,
        /// The queue's message size.
        max: usize,
    },
    /// The priority is above [`MAX_PRIORITY`].
    #[error("message priority {priority} is above the maximum of {MAX_PRIORITY}")]
    BadPriority {
        /// The priority given.
        priority: u32,
    },
    /// The mqueue file system is not mounted, so queues cannot be listed.
    #[error(
        "cannot list message queues: {MQUEUE_DIR} is not mounted ({source}); \
         mount it with `mount -t mqueue none {MQUEUE_DIR}`, or name the queues to prune"
    )]
    NotMounted {
        /// What reading the directory said.
        source: io::Error,
    },
    /// Any other error from the operating system.
    #[error("{op} on message queue {name} failed: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The queue's name.
        name: String,
        /// What the kernel said.
        source: io::Error,
    },
}

/// The system's message-queue limits, from `/proc/sys/fs/mqueue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqLimits {
    /// Most messages one queue may hold (`msg_max`).
    pub msg_max: usize,
    /// Largest message size a queue may have (`msgsize_max`).
    pub msgsize_max: usize,
    /// Most queues on the system (`queues_max`).
    pub queues_max: usize,
}

/// Reads the limits from `/proc/sys/fs/mqueue`. An unreadable directory
/// means the kernel has no POSIX message queues: [`MqError::Unsupported`].
pub fn limits() -> Result<MqLimits, MqError> {
    let read = |file: &str| -> Result<usize, MqError> {
        let path = format!("{LIMITS_DIR}/{file}");
        let text = std::fs::read_to_string(&path).map_err(|err| MqError::Unsupported {
            reason: format!("cannot read {path}: {err}"),
        })?;
        text.trim().parse().map_err(|err| MqError::Unsupported {
            reason: format!("{path} holds {:?}, not a number: {err}", text.trim()),
        })
    };
    Ok(MqLimits {
        msg_max: read("msg_max")?,
        msgsize_max: read("msgsize_max")?,
        queues_max: read("queues_max")?,
    })
}

/// A queue's attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqAttributes {
    /// Most messages it holds.
    pub max_messages: usize,
    /// Largest message, in bytes.
    pub message_size: usize,
    /// Messages in it now.
    pub current_messages: usize,
}

/// The queue name of `service` for user `uid`: `/sy-<uid>-<service>`.
///
/// Characters other than ASCII letters, digits, `.`, `_` and `-` become `_`.
/// When that changed the name, or it had to be cut to `NAME_MAX`, a hash
/// of the original name is appended so that different services keep
/// different queues.
pub fn queue_name(service: &str, uid: u32) -> String {
    let prefix = format!("/sy-{uid}-");
    let mut clean: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let room = NAME_MAX + 1 - prefix.len();
    if clean != service || clean.is_empty() || clean.len() > room {
        let tag = format!("-{:08x}", fnv1a32(service.as_bytes()));
        // `clean` is ASCII, so any byte index is a char boundary.
        clean.truncate(room - tag.len());
        clean.push_str(&tag);
    }
    prefix + &clean
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// The prefix of every queue [`queue_name`] makes for `uid`, without the
/// leading `/`.
pub fn own_prefix(uid: u32) -> String {
    format!("sy-{uid}-")
}

fn check_name(name: &str) -> Result<(), MqError> {
    let invalid = |reason| MqError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let Some(rest) = name.strip_prefix('/') else {
        return Err(invalid("it must start with '/'"));
    };
    if rest.is_empty() {
        return Err(invalid("it is empty after the '/'"));
    }
    if rest.len() > NAME_MAX {
        return Err(invalid("it is longer than 255 bytes after the '/'"));
    }
    if rest.contains('/') || rest.contains('\0') {
        return Err(invalid("it contains '/' or NUL after the first character"));
    }
    Ok(())
}

/// An open queue descriptor, closed on drop (`MqdT` itself does not close).
#[derive(Debug)]
struct Mqd(Option<MqdT>);

impl Mqd {
    fn get(&self) -> &MqdT {
        self.0
            .as_ref()
            .expect("an Mqd holds a descriptor until it is dropped")
    }
}

impl Drop for Mqd {
    fn drop(&mut self) {
        if let Some(mqd) = self.0.take() {
            // Nothing useful to do if close fails.
            let _ = nix::mqueue::mq_close(mqd);
        }
    }
}

/// What an open queue keeps: its name, descriptor and fixed attributes.
#[derive(Debug)]
struct Queue {
    name: String,
    mqd: Mqd,
    max_messages: usize,
    message_size: usize,
}

impl Queue {
    fn open(name: &str, flags: MQ_OFlag, op: &'static str) -> Result<Self, MqError> {
        let mqd = nix::mqueue::mq_open(name, flags | base_flags(), Mode::empty(), None)
            .map_err(|errno| open_error(name, op, errno))?;
        Self::adopt(name, Mqd(Some(mqd)))
    }

    fn adopt(name: &str, mqd: Mqd) -> Result<Self, MqError> {
        let mut queue = Self {
            name: name.to_owned(),
            mqd,
            max_messages: 0,
            message_size: 0,
        };
        let attrs = queue.attributes()?;
        queue.max_messages = attrs.max_messages;
        queue.message_size = attrs.message_size;
        Ok(queue)
    }

    fn io(&self, op: &'static str, errno: Errno) -> MqError {
        MqError::Io {
            op,
            name: self.name.clone(),
            source: errno.into(),
        }
    }

    fn attributes(&self) -> Result<MqAttributes, MqError> {
        let attr = nix::mqueue::mq_getattr(self.mqd.get()).map_err(|e| self.io("mq_getattr", e))?;
        let size = |value: mq_attr_member_t| usize::try_from(value).unwrap_or(0);
        Ok(MqAttributes {
            max_messages: size(attr.maxmsg()),
            message_size: size(attr.msgsize()),
            current_messages: size(attr.curmsgs()),
        })
    }

    /// Refuses a queue that is not this user's with mode 0600.
    fn check_ours(&self) -> Result<(), MqError> {
        let stat = rustix::fs::fstat(self.mqd.get()).map_err(|e| MqError::Io {
            op: "fstat",
            name: self.name.clone(),
            source: e.into(),
        })?;
        let our_uid = super::uid();
        let mode = stat.st_mode & 0o7777;
        if stat.st_uid != our_uid || mode != QUEUE_MODE {
            return Err(MqError::Foreign {
                name: self.name.clone(),
                owner_uid: stat.st_uid,
                mode,
                our_uid,
            });
        }
        Ok(())
    }

    fn is_linked(&self) -> Result<bool, MqError> {
        let stat = rustix::fs::fstat(self.mqd.get()).map_err(|e| MqError::Io {
            op: "fstat",
            name: self.name.clone(),
            source: e.into(),
        })?;
        Ok(stat.st_nlink > 0)
    }
}

fn base_flags() -> MQ_OFlag {
    MQ_OFlag::O_NONBLOCK | MQ_OFlag::O_CLOEXEC
}

fn open_error(name: &str, op: &'static str, errno: Errno) -> MqError {
    match errno {
        Errno::ENOENT => MqError::NotFound {
            name: name.to_owned(),
        },
        Errno::EACCES => MqError::PermissionDenied {
            name: name.to_owned(),
            our_uid: super::uid(),
        },
        Errno::ENOSYS => MqError::Unsupported {
            reason: format!("{op}: {}", io::Error::from(errno)),
        },
        Errno::EMFILE | Errno::ENFILE | Errno::ENOSPC | Errno::ENOMEM => MqError::ResourceLimit {
            name: name.to_owned(),
            source: errno.into(),
        },
        Errno::ENAMETOOLONG => MqError::InvalidName {
            name: name.to_owned(),
            reason: "the kernel says it is too long",
        },
        _ => MqError::Io {
            op,
            name: name.to_owned(),
            source: errno.into(),
        },
    }
}

/// The receiving end of a queue, owned by the server.
#[derive(Debug)]
pub struct OwnedQueue {
    queue: Queue,
    reopened: bool,
}

/// Creates queue `name` for receiving, exclusively, with mode 0600, room for
/// `max_messages` messages of `message_size` bytes.
///
/// If the queue already exists and is this user's with mode 0600, it is a
/// previous incarnation of this server whose messages must be kept: it is
/// opened as it is (its own attributes apply, see
/// [`OwnedQueue::attributes`]) and [`OwnedQueue::reopened`] is true.
/// Anything else is refused with [`MqError::Foreign`] or
/// [`MqError::PermissionDenied`].
///
/// Sizes above [`limits`] work only for a privileged process
/// (CAP_SYS_RESOURCE); for others the kernel refuses them
/// ([`MqError::ExceedsLimits`]).
pub fn create_exclusive(
    name: &str,
    max_messages: usize,
    message_size: usize,
) -> Result<OwnedQueue, MqError> {
    check_name(name)?;
    let limits = limits()?;
    // Above the system limits only a privileged process (CAP_SYS_RESOURCE)
    // may go; the kernel decides (EINVAL otherwise).
    if max_messages == 0 || message_size == 0 {
        return Err(MqError::ExceedsLimits {
            max_messages,
            message_size,
            msg_max: limits.msg_max,
            msgsize_max: limits.msgsize_max,
        });
    }
    let too_big = |_| MqError::ExceedsLimits {
        max_messages,
        message_size,
        msg_max: limits.msg_max,
        msgsize_max: limits.msgsize_max,
    };
    let attr = MqAttr::new(
        0,
        mq_attr_member_t::try_from(max_messages).map_err(too_big)?,
        mq_attr_member_t::try_from(message_size).map_err(too_big)?,
        0,
    );
    let mode = Mode::S_IRUSR | Mode::S_IWUSR;
    // Created, or found and ours; a queue removed between the two opens is
    // simply created on the next round.
    for _ in 0..3 {
        let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDONLY | base_flags();
        match nix::mqueue::mq_open(name, flags, mode, Some(&attr)) {
            Ok(mqd) => {
                let queue = Queue::adopt(name, Mqd(Some(mqd)))?;
                // The umask may have cleared bits of 0600.
                rustix::fs::fchmod(queue.mqd.get(), rustix::fs::Mode::from_raw_mode(QUEUE_MODE))
                    .map_err(|e| MqError::Io {
                        op: "fchmod",
                        name: name.to_owned(),
                        source: e.into(),
                    })?;
                return Ok(OwnedQueue {
                    queue,
                    reopened: false,
                });
            }
            Err(Errno::EEXIST) => match Queue::open(name, MQ_OFlag::O_RDONLY, "mq_open") {
                Ok(queue) => {
                    queue.check_ours()?;
                    return Ok(OwnedQueue {
                        queue,
                        reopened: true,
                    });
                }
                Err(MqError::NotFound { .. }) => continue,
                Err(err) => return Err(err),
            },
            Err(Errno::EINVAL) => {
                return Err(MqError::ExceedsLimits {
                    max_messages,
                    message_size,
                    msg_max: limits.msg_max,
                    msgsize_max: limits.msgsize_max,
                });
            }
            Err(errno) => return Err(open_error(name, "mq_open(O_CREAT|O_EXCL)", errno)),
        }
    }
    Err(MqError::Io {
        op: "mq_open",
        name: name.to_owned(),
        source: io::Error::other("the queue kept appearing and disappearing"),
    })
}

impl OwnedQueue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.queue.name
    }

    /// Whether the queue already existed (a previous incarnation of this
    /// server left it, perhaps with messages in it).
    pub fn reopened(&self) -> bool {
        self.reopened
    }

    /// The size a receive buffer needs: the queue's message size.
    pub fn message_size(&self) -> usize {
        self.queue.message_size
    }

    /// How many messages the queue holds at most.
    pub fn max_messages(&self) -> usize {
        self.queue.max_messages
    }

    /// The attributes now, including the number of waiting messages.
    pub fn attributes(&self) -> Result<MqAttributes, MqError> {
        self.queue.attributes()
    }

    /// Whether the queue still has its name (false once it was unlinked;
    /// senders can no longer reach it).
    pub fn is_linked(&self) -> Result<bool, MqError> {
        self.queue.is_linked()
    }

    /// Takes the oldest message of the highest priority into `buf` and
    /// returns its length and priority. `buf` must hold
    /// [`message_size`](Self::message_size) bytes. An empty queue is
    /// [`MqError::WouldBlock`].
    pub fn receive(&self, buf: &mut [u8]) -> Result<(usize, u32), MqError> {
        if buf.len() < self.queue.message_size {
            return Err(MqError::Io {
                op: "mq_receive",
                name: self.queue.name.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a buffer of {} bytes is smaller than the message size of {}",
                        buf.len(),
                        self.queue.message_size
                    ),
                ),
            });
        }
        let mut priority = 0;
        match nix::mqueue::mq_receive(self.queue.mqd.get(), buf, &mut priority) {
            Ok(len) => Ok((len, priority)),
            Err(Errno::EAGAIN) => Err(MqError::WouldBlock {
                name: self.queue.name.clone(),
            }),
            Err(errno) => Err(self.queue.io("mq_receive", errno)),
        }
    }
}

impl AsFd for OwnedQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.mqd.get().as_fd()
    }
}

impl AsRawFd for OwnedQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.queue.mqd.get().as_raw_fd()
    }
}

/// The sending end of a queue, opened by a client.
#[derive(Debug)]
pub struct SendQueue {
    queue: Queue,
}

/// Opens queue `name` for sending, after checking it is this user's with
/// mode 0600. A queue that does not exist is [`MqError::NotFound`]. A queue
/// whose server is not running is opened all the same: its messages wait.
pub fn open_send(name: &str) -> Result<SendQueue, MqError> {
    check_name(name)?;
    let queue = Queue::open(name, MQ_OFlag::O_WRONLY, "mq_open(O_WRONLY)")?;
    queue.check_ours()?;
    Ok(SendQueue { queue })
}

impl SendQueue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.queue.name
    }

    /// The longest message the queue takes.
    pub fn message_size(&self) -> usize {
        self.queue.message_size
    }

    /// How many messages the queue holds at most.
    pub fn max_messages(&self) -> usize {
        self.queue.max_messages
    }

    /// The attributes now, including the number of waiting messages.
    pub fn attributes(&self) -> Result<MqAttributes, MqError> {
        self.queue.attributes()
    }

    /// Whether the queue still has its name. Messages sent to a queue that
    /// was unlinked reach no one once the last descriptor closes; reopen by
    /// name instead.
    pub fn is_linked(&self) -> Result<bool, MqError> {
        self.queue.is_linked()
    }

    /// Sends `message` with `priority` without waiting: a full queue is
    /// [`MqError::Full`], a message over the queue's message size
    /// [`MqError::TooLarge`] (nothing is sent).
    pub fn send(&self, message: &[u8], priority: u32) -> Result<(), MqError> {
        if priority > MAX_PRIORITY {
            return Err(MqError::BadPriority { priority });
        }
        if message.len() > self.queue.message_size {
            return Err(MqError::TooLarge {
                name: self.queue.name.clone(),
                len: message.len(),
                max: self.queue.message_size,
            });
        }
        match nix::mqueue::mq_send(self.queue.mqd.get(), message, priority) {
            Ok(()) => Ok(()),
            Err(Errno::EAGAIN) => Err(MqError::Full {
                name: self.queue.name.clone(),
                max_messages: self.queue.max_messages,
            }),
            Err(Errno::EMSGSIZE) => Err(MqError::TooLarge {
                name: self.queue.name.clone(),
                len: message.len(),
                max: self.queue.message_size,
            }),
            Err(errno) => Err(self.queue.io("mq_send", errno)),
        }
    }
}

impl AsFd for SendQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.mqd.get().as_fd()
    }
}

impl AsRawFd for SendQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.queue.mqd.get().as_raw_fd()
    }
}

/// Registers a queue with the current tokio reactor.
#[cfg(feature = "rt")]
fn register<T: AsRawFd>(
    name: &str,
    queue: T,
    interest: tokio::io::Interest,
) -> Result<tokio::io::unix::AsyncFd<T>, MqError> {
    // SAFETY: `T` is `OwnedQueue` or `SendQueue` (the only callers). Both hold
    // their descriptor in an `Mqd` from `mq_open` until they are dropped:
    // nothing closes or replaces it earlier, so `as_raw_fd` returns the same
    // open descriptor for as long as the `AsyncFd` owns the queue.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(queue, interest) }.map_err(|err| {
        MqError::Io {
            op: "registering with the tokio reactor",
            name: name.to_owned(),
            source: err.into(),
        }
    })
}

#[cfg(feature = "rt")]
impl OwnedQueue {
    /// Registers the queue with the current tokio reactor, for readability
    /// (a message is waiting). Must be called within a tokio runtime.
    pub fn into_async(self) -> Result<tokio::io::unix::AsyncFd<Self>, MqError> {
        let name = self.queue.name.clone();
        register(&name, self, tokio::io::Interest::READABLE)
    }
}

#[cfg(feature = "rt")]
impl SendQueue {
    /// Registers the queue with the current tokio reactor, for writability
    /// (there is room). Must be called within a tokio runtime.
    pub fn into_async(self) -> Result<tokio::io::unix::AsyncFd<Self>, MqError> {
        let name = self.queue.name.clone();
        register(&name, self, tokio::io::Interest::WRITABLE)
    }
}

/// Opens queue `name` for receiving if it exists and is this user's with
/// mode 0600, without creating it. For lifecycle tools (removal, pruning);
/// a server uses [`create_exclusive`].
pub fn open_existing(name: &str) -> Result<OwnedQueue, MqError> {
    check_name(name)?;
    let queue = Queue::open(name, MQ_OFlag::O_RDONLY, "mq_open(O_RDONLY)")?;
    queue.check_ours()?;
    Ok(OwnedQueue {
        queue,
        reopened: true,
    })
}

/// Removes queue `name`. Descriptors already open keep working, but the
/// queue can no longer be opened, and its messages go when the last
/// descriptor closes. A missing queue is [`MqError::NotFound`].
pub fn unlink(name: &str) -> Result<(), MqError> {
    check_name(name)?;
    nix::mqueue::mq_unlink(name).map_err(|errno| open_error(name, "mq_unlink", errno))
}

/// The names (with their leading `/`) of this user's switchyard queues, from
/// `/dev/mqueue`: entries named by [`queue_name`] for this uid and owned by
/// it. Without the mounted file system: [`MqError::NotMounted`].
pub fn list_own_queues() -> Result<Vec<String>, MqError> {
    use std::os::unix::fs::MetadataExt;

    let uid = super::uid();
    let prefix = own_prefix(uid);
    let entries = std::fs::read_dir(MQUEUE_DIR).map_err(|source| MqError::NotMounted { source })?;
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        if !file_name.starts_with(&prefix) {
            continue;
        }
        if entry.metadata().is_ok_and(|meta| meta.uid() == uid) {
            names.push(format!("/{file_name}"));
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_sanitised_and_bounded() {
        assert_eq!(queue_name("greeter", 1000), "/sy-1000-greeter");
        assert_eq!(queue_name("calc.v1_x-y", 0), "/sy-0-calc.v1_x-y");
        let odd = queue_name("a/b c", 7);
        assert!(odd.starts_with("/sy-7-a_b_c-"), "{odd}");
        assert_ne!(odd, queue_name("a_b_c", 7));
        assert_ne!(queue_name("a/b", 7), queue_name("a b", 7));
        let long = queue_name(&"x".repeat(1000), u32::MAX);
        assert_eq!(long.len(), NAME_MAX + 1);
        assert!(check_name(&long).is_ok());
        assert_ne!(long, queue_name(&"x".repeat(999), u32::MAX));
        assert!(check_name(&queue_name("", 1)).is_ok());
        assert!(check_name(&queue_name("ünï", 1)).is_ok());
    }

    #[test]
    fn bad_names_are_refused_before_the_kernel_sees_them() {
        for name in ["noslash", "/", "/a/b", &format!("/{}", "x".repeat(256))] {
            assert!(
                matches!(check_name(name), Err(MqError::InvalidName { .. })),
                "{name}"
            );
        }
    }
}
