//! Parent and child processes that call each other over inherited pipes.
//!
//! In the parent, [`Spawner`] starts a child with a pair of pipes (one each
//! way) that only that child inherits, and serves the parent's services to
//! it. [`ChildProcess::channel`] calls the services the child serves.
//!
//! In the child, `FooClient::connect("foo")` picks the pipe without
//! configuration when the parent serves `foo`; [`serve_parent`] offers the
//! child's services to the parent over the same pipes; [`parent_gone`]
//! resolves when the parent exits, so a worker can shut down instead of
//! lingering as an orphan.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard::Status> {
//! use switchyard::process::Spawner;
//! let child = Spawner::new(std::process::Command::new("/usr/bin/worker"))
//!     .spawn()
//!     .await?;
//! println!("{}", child.channel().selection());
//! # Ok(()) }
//! ```

mod peer_link;

use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OnceCell, watch};

use self::peer_link::{End, PeerLink, open_peer};
use crate::client::{Channel, ChannelBuilder, Connection};
use crate::protocol::frame::DEFAULT_FRAME_LIMIT;
use crate::protocol::status::Status;
use crate::server::{Router, ServerConfig, ServerShared};
use crate::service::Service;
use crate::transport::pipe::{PipeLink, PipePair};
use crate::transport::{Endpoint, PeerInfo, PipeSide};

/// Tells a child where its pipes are: `<parent pid>:<read fd>,<write fd>`.
pub const PIPE_ENV: &str = "SWITCHYARD_PIPE";
/// Tells a child which services its parent serves (lower case, commas).
pub const PARENT_SERVICES_ENV: &str = "SWITCHYARD_PARENT_SERVICES";

/// Services one side of a pipe offers the other, with the limits they are
/// served under (the same knobs as [`ServerBuilder`](crate::ServerBuilder)'s).
#[derive(Debug, Default)]
pub struct Services {
    router: Router,
    error: Option<Status>,
    /// The largest body this side takes on the link, if set here.
    frame_limit: Option<u32>,
    config: ServerConfig,
    layers: crate::layers::LayerList,
}

impl Services {
    /// No services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service (a generated `FooServer`).
    pub fn add_service<S: Service>(mut self, service: S) -> Self {
        if let Err(status) = self.router.add(Arc::new(service)) {
            self.error.get_or_insert(status);
        }
        self
    }

    /// As [`ServerBuilder::layer`](crate::ServerBuilder::layer): every call
    /// served over the pipe runs through `layer` first.
    pub fn layer<L: crate::layers::Layer>(mut self, layer: L) -> Self {
        self.layers.push(Arc::new(layer));
        self
    }

    /// The largest body this side takes on the pipe (default 16 MiB, at most
    /// 1 GiB): the calls it serves and the responses to its own calls alike
    /// (a pipe has one limit each way). In a child, this is the only way to
    /// raise it; in a parent it overrides the `max_frame` of
    /// [`Spawner::channel_settings`].
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.frame_limit = Some(bytes.clamp(1, crate::protocol::frame::MAX_FRAME_LIMIT));
        self
    }

    /// As [`ServerBuilder::max_in_flight`](crate::ServerBuilder::max_in_flight).
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.config.max_in_flight = calls;
        self
    }

    /// As [`ServerBuilder::stream_window`](crate::ServerBuilder::stream_window):
    /// the frames of a stream the other side may send before this side
    /// grants more (the window of this side's own calls' streams is the
    /// channel's, [`ChannelBuilder::stream_window`](crate::ChannelBuilder::stream_window)).
    pub fn stream_window(mut self, frames: u32) -> Self {
        self.config.stream_window = frames.max(1);
        self
    }

    /// As [`ServerBuilder::max_metadata`](crate::ServerBuilder::max_metadata).
    pub fn max_metadata(mut self, bytes: usize, entries: usize) -> Self {
        self.config.metadata_limits = crate::protocol::metadata::MetadataLimits {
            max_bytes: bytes,
            max_entries: entries,
        };
        self
    }

    /// As [`ServerBuilder::max_cancel_rate`](crate::ServerBuilder::max_cancel_rate).
    pub fn max_cancel_rate(mut self, per_second: u32) -> Self {
        self.config.cancel_rate =
            crate::protocol::session::cancel_budget::CancelRate::per_second(per_second);
        self
    }

    /// The services, served with `frame_limit` as the largest body this
    /// side takes on the link (a peer link has one limit for the calls it
    /// serves and the responses to its own calls), and `knobs` naming the
    /// settings in messages.
    fn into_shared(
        self,
        frame_limit: u32,
        knobs: crate::session::LimitKnobs,
    ) -> Result<Arc<ServerShared>, Status> {
        if let Some(status) = self.error {
            return Err(status);
        }
        let layers = self
            .layers
            .build(crate::layers::Side::Server, &self.router.names().join(", "));
        Ok(Arc::new(ServerShared {
            layers,
            router: self.router,
            config: ServerConfig {
                frame_limit,
                knobs,
                ..self.config
            },
            queues: Vec::new(),
            endpoints: std::sync::OnceLock::new(),
            // Pipes are between a parent and its own child.
            intake: crate::transport::intake::IntakeLimits::default(),
            slots: crate::server::slots::Slots::new(usize::MAX, "a pipe peer".to_owned()),
        }))
    }
}

/// Starts a child process connected to this one by pipes.
#[derive(Debug)]
pub struct Spawner {
    command: tokio::process::Command,
    services: Services,
    channel: ChannelBuilder,
}

impl Spawner {
    /// Prepares `command` (a `std::process::Command` or
    /// `tokio::process::Command`).
    pub fn new(command: impl Into<tokio::process::Command>) -> Self {
        Self {
            command: command.into(),
            services: Services::new(),
            channel: ChannelBuilder::new(),
        }
    }

    /// Serves `service` to the child.
    pub fn add_service<S: Service>(mut self, service: S) -> Self {
        self.services = self.services.add_service(service);
        self
    }

    /// Settings for the channel to the child (call deadline, how long the
    /// child may take to say hello: its `connect_timeout`, 5 s by default;
    /// `max_frame`: the largest body the parent takes on the pipe, its
    /// child's responses and calls alike, 16 MiB by default).
    pub fn channel_settings(mut self, builder: ChannelBuilder) -> Self {
        self.channel = builder;
        self
    }

    /// Starts the child and waits for its hello. The child must use
    /// switchyard (`connect`, [`serve_parent`] or [`parent_gone`]) within the
    /// connect timeout.
    pub async fn spawn(mut self) -> Result<ChildProcess, Status> {
        let names: Vec<String> = self
            .services
            .router
            .names()
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        let mut config = self.channel.connection_config();
        // The channel's frame limit (or the services' own) is this side's
        // on the link: what the hello announces and the decoder enforces,
        // for the child's responses and its calls alike.
        if let Some(limit) = self.services.frame_limit {
            config.frame_limit = limit;
        }
        config.knobs = crate::session::LimitKnobs::PARENT;
        let shared = self
            .services
            .into_shared(config.frame_limit, crate::session::LimitKnobs::PARENT)?;
        let pair = PipePair::new().map_err(|err| {
            Status::resource_exhausted(format!("could not create pipes for the child: {err}"))
        })?;
        let program = self
            .command
            .as_std()
            .get_program()
            .to_string_lossy()
            .into_owned();
        let [child_read, child_write] = pair.child_fds();
        self.command
            .env(
                PIPE_ENV,
                format!("{}:{child_read},{child_write}", std::process::id()),
            )
            .env(PARENT_SERVICES_ENV, names.join(","));
        crate::sys::inherit::inherit_in_child(&mut self.command, pair.child_fds());
        let mut child = self
            .command
            .spawn()
            .map_err(|err| Status::unavailable(format!("could not start {program}: {err}")))?;
        // The child has its copies; ours would keep the pipes open forever.
        drop(pair.child_read);
        drop(pair.child_write);
        let pid = child.id().unwrap_or(0);
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = exit_tx.send(Some(status));
            }
        });
        let peer = PeerInfo {
            addr: Endpoint::Pipe {
                side: PipeSide::Child,
                pid,
            }
            .to_string(),
            pid: Some(pid),
            uid: Some(crate::sys::uid()),
        };
        let link =
            PipeLink::from_fds(pair.parent_read, pair.parent_write, peer).map_err(|err| {
                Status::internal(format!("the pipes to {program} are unusable: {err}"))
            })?;
        let selection = crate::select::select(crate::select::Fixed::SpawnedChild {
            program: &program,
            pid,
        });
        let mut exit_for_end = exit.clone();
        let describe_end = move |end: End| async move {
            // The pipe usually closes a moment before the child is reaped.
            let status = tokio::time::timeout(
                Duration::from_millis(200),
                exit_for_end.wait_for(Option::is_some),
            )
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|s| *s));
            let why = match (&end, status) {
                (_, Some(status)) => format!("exited ({status})"),
                (End::Failed(err) | End::WriteFailed(err), None) => {
                    format!("broke the protocol on its pipe ({err})")
                }
                _ => "closed its pipe".to_owned(),
            };
            Status::unavailable(format!(
                "child process {pid} {why}; calls to it fail — see ChildProcess::exit_status"
            ))
        };
        let opened = open_peer(shared, link, selection, &config, describe_end).await;
        let link = match opened {
            Ok(link) => link,
            Err(status) => {
                let exited = exit
                    .borrow()
                    .map(|s| format!(" (it exited: {s})"))
                    .unwrap_or_default();
                kill(pid);
                return Err(Status::new(
                    status.code(),
                    format!("child {program} (pid {pid}){exited}: {}", status.message()),
                ));
            }
        };
        Ok(ChildProcess {
            pid,
            channel: Channel::from_connection(Arc::clone(&link.conn), self.channel),
            exit,
            link,
        })
    }
}

fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// A child started by [`Spawner`]. Dropping it kills the child if it still
/// runs.
#[derive(Debug)]
pub struct ChildProcess {
    pid: u32,
    channel: Channel,
    exit: watch::Receiver<Option<ExitStatus>>,
    link: PeerLink,
}

impl ChildProcess {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The channel to the services the child serves: pass it to
    /// `FooClient::new`.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// How the child exited, once it has.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Waits for the child to exit.
    pub async fn wait(&mut self) -> ExitStatus {
        loop {
            if let Some(status) = *self.exit.borrow_and_update() {
                return status;
            }
            if self.exit.changed().await.is_err() {
                // The watcher only stops after sending the status.
                if let Some(status) = *self.exit.borrow() {
                    return status;
                }
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until the pipes to the child have closed (it exited, crashed or
    /// closed them).
    pub async fn closed(&mut self) {
        let _ = self.link.ended.wait_for(|ended| *ended).await;
    }

    /// Closes the pipes to the child (its `parent_gone()` resolves, so a
    /// well-behaved child exits), waits up to `grace` for it to exit, then
    /// kills it. Returns how it exited.
    pub async fn shutdown(mut self, grace: Duration) -> ExitStatus {
        self.link.stop.abort();
        if let Ok(status) = tokio::time::timeout(grace, self.wait()).await {
            return status;
        }
        self.kill();
        self.wait().await
    }

    /// Sends SIGKILL.
    pub fn kill(&self) {
        if self.exit_status().is_none() {
            kill(self.pid);
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a child knows of the parent that spawned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentInfo {
    /// The parent's process id.
    pub pid: u32,
    /// Services it serves over the pipes (lower case).
    pub services: Vec<String>,
}

/// The parent that started this process with switchyard pipes, if one did
/// and it is still this process's parent.
pub fn parent() -> Option<ParentInfo> {
    let (pid, _) = parse_pipe_env().ok()??;
    let services = std::env::var(PARENT_SERVICES_ENV)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Some(ParentInfo { pid, services })
}

/// `Ok(None)`: not started with pipes. `Err`: the variable is malformed or
/// was inherited from a grandparent.
fn parse_pipe_env() -> Result<Option<(u32, [i32; 2])>, Status> {
    let Ok(value) = std::env::var(PIPE_ENV) else {
        return Ok(None);
    };
    let malformed = || {
        Status::invalid_argument(format!(
            "{PIPE_ENV}={value:?} is malformed; it is set by switchyard::process::Spawner, \
             do not set it by hand"
        ))
    };
    let (pid, fds) = value.split_once(':').ok_or_else(malformed)?;
    let (read, write) = fds.split_once(',').ok_or_else(malformed)?;
    let pid: u32 = pid.parse().map_err(|_| malformed())?;
    let read: i32 = read.parse().map_err(|_| malformed())?;
    let write: i32 = write.parse().map_err(|_| malformed())?;
    if read == write {
        // One fd cannot be both ends, and taking it over twice would close
        // it twice.
        return Err(Status::invalid_argument(format!(
            "{PIPE_ENV}={value:?} names fd {read} as both the read and the write end; it is set \
             by switchyard::process::Spawner, do not set it by hand"
        )));
    }
    let actual = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    if actual != pid {
        // Inherited through an intermediate process: the fds are not ours.
        return Ok(None);
    }
    Ok(Some((pid, [read, write])))
}

/// The child's link to its parent, opened once.
static PARENT_LINK: OnceCell<Result<PeerLink, Status>> = OnceCell::const_new();
/// Services the child offers its parent, registered before the link opens.
static CHILD_SERVICES: Mutex<Option<Services>> = Mutex::new(None);

async fn parent_link() -> Result<&'static PeerLink, Status> {
    PARENT_LINK
        .get_or_init(open_parent_link)
        .await
        .as_ref()
        .map_err(Clone::clone)
}

async fn open_parent_link() -> Result<PeerLink, Status> {
    let (ppid, [read, write]) = parse_pipe_env()?.ok_or_else(|| {
        Status::failed_precondition(
            "this process was not started by switchyard::process::Spawner with pipes",
        )
    })?;
    let take = |fd| {
        crate::sys::inherit::take_inherited_pipe(fd).map_err(|err| {
            Status::failed_precondition(format!("the inherited pipe fd {fd} is unusable: {err}"))
        })
    };
    let (read, write) = (take(read)?, take(write)?);
    let services = CHILD_SERVICES
        .lock()
        .map(|mut s| s.take())
        .unwrap_or_default()
        .unwrap_or_default();
    let frame_limit = services.frame_limit.unwrap_or(DEFAULT_FRAME_LIMIT);
    let shared = services.into_shared(frame_limit, crate::session::LimitKnobs::CHILD)?;
    let peer = PeerInfo {
        addr: Endpoint::Pipe {
            side: PipeSide::Parent,
            pid: ppid,
        }
        .to_string(),
        pid: Some(ppid),
        uid: Some(crate::sys::uid()),
    };
    let link = PipeLink::from_fds(read, write, peer).map_err(|err| {
        Status::failed_precondition(format!("the inherited pipes are unusable: {err}"))
    })?;
    let selection = crate::select::select(crate::select::Fixed::ParentPipe { ppid });
    let describe_end = move |_end: End| async move {
        Status::unavailable(format!(
            "the parent process (pid {ppid}) is gone: its pipe closed; parent_gone() has resolved"
        ))
    };
    let mut config = ChannelBuilder::new().connection_config();
    config.frame_limit = frame_limit;
    config.knobs = crate::session::LimitKnobs::CHILD;
    open_peer(shared, link, selection, &config, describe_end).await
}

/// In a child: serves `services` to the parent over the inherited pipes.
/// Call it before any other switchyard call of the child (the child's hello,
/// which lists its services, goes out when the link opens).
pub async fn serve_parent(services: Services) -> Result<(), Status> {
    if PARENT_LINK.initialized() {
        return Err(Status::failed_precondition(
            "the link to the parent is already open without these services; call \
             process::serve_parent before connecting to anything",
        ));
    }
    if let Ok(mut slot) = CHILD_SERVICES.lock() {
        *slot = Some(services);
    }
    parent_link().await.map(|_| ())
}

/// In a child: a channel to the parent's services over the pipes.
pub async fn parent_channel() -> Result<Channel, Status> {
    let link = parent_link().await?;
    Ok(Channel::from_connection(
        Arc::clone(&link.conn),
        ChannelBuilder::new(),
    ))
}

/// The parent this process inherited switchyard pipes from, as selection
/// facts: `None` without one. A malformed variable is an error, not "no
/// parent": the caller would otherwise look the name up elsewhere and hide
/// what is wrong.
pub(crate) fn parent_facts() -> Result<Option<crate::select::ParentFacts>, Status> {
    if parse_pipe_env()?.is_none() {
        return Ok(None);
    }
    Ok(parent().map(|p| crate::select::ParentFacts {
        pid: p.pid,
        services: p.services,
    }))
}

/// In a child: the connection to the parent over the inherited pipes
/// (opening the link on first use).
pub(crate) async fn parent_connection() -> Result<Arc<Connection>, Status> {
    Ok(Arc::clone(&parent_link().await?.conn))
}

/// In a child: resolves when the parent is gone (its pipe closed). In a
/// process without a switchyard parent it never resolves.
pub async fn parent_gone() {
    match parent_link().await {
        Ok(link) => {
            let mut ended = link.ended.clone();
            let _ = ended.wait_for(|ended| *ended).await;
        }
        Err(_) => std::future::pending().await,
    }
}
