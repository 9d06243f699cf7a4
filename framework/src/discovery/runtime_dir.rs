//! The per-user runtime directory that holds the registry and sockets.
//!
//! The directory is opened once, with `O_DIRECTORY|O_NOFOLLOW`, checked on
//! the open handle (`fstat`: owner and mode), and from then on used only
//! through that handle and the handles of its `registry/` and `sockets/`
//! subdirectories: entries are created, read and removed relative to them
//! (`openat`, `mkdirat`, `unlinkat`), and sockets are bound and connected
//! through `/proc/self/fd/<handle>/<name>`, which names the directory that
//! was checked, whatever the path points at by then. A symbolic link at
//! the path is refused, never followed, and nothing is chmod'ed by path.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::registry::RegistryError;

/// The environment variable that names the runtime directory.
pub const RUNTIME_DIR_ENV: &str = "SWITCHYARD_RUNTIME_DIR";

/// Where the runtime directory is: `SWITCHYARD_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/switchyard`, else `~/.switchyard/run` when the home
/// directory is this user's and closed to others, else
/// `$TMPDIR/switchyard-<uid>` (`/tmp` by default; [`RuntimeDir::open`]
/// verifies it: another user may have made it first, and is then named in
/// the error along with the fix).
pub fn runtime_dir() -> PathBuf {
    choose_runtime_dir(
        |name| std::env::var_os(name),
        &std::env::temp_dir(),
        crate::sys::uid(),
    )
}

/// [`runtime_dir`] from the environment `var` gives, the temporary
/// directory and this user's uid.
fn choose_runtime_dir(
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
    temp: &Path,
    uid: u32,
) -> PathBuf {
    let set = |name: &str| var(name).filter(|value| !value.is_empty());
    if let Some(dir) = set(RUNTIME_DIR_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = set("XDG_RUNTIME_DIR") {
        return Path::new(&dir).join("switchyard");
    }
    if let Some(home) = set("HOME").and_then(|home| private_home(Path::new(&home), uid)) {
        return home.join(".switchyard").join("run");
    }
    temp.join(format!("switchyard-{uid}"))
}

/// `home`, if it is a directory user `uid` owns that others cannot write
/// to (so nobody else can make or replace what is in it).
fn private_home(home: &Path, uid: u32) -> Option<PathBuf> {
    let home = home.to_owned();
    let stat = rustix::fs::stat(&home).ok()?;
    let mode = stat.st_mode & 0o7777;
    let ok = FileType::from_raw_mode(stat.st_mode) == FileType::Directory
        && stat.st_uid == uid
        && mode & 0o022 == 0;
    ok.then_some(home)
}

/// The runtime directory, opened and checked: the handles everything in it
/// is reached through.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
    root: OwnedFd,
    registry: OwnedFd,
    sockets: OwnedFd,
}

impl RuntimeDir {
    /// Opens `path` (creating it, mode 0700, if missing; its parents are
    /// created as needed), refusing a symbolic link, something that is not
    /// a directory, and a directory another user owns. A directory of this
    /// user's that others may enter is tightened to 0700 through the
    /// handle. Then does the same for `registry/` and `sockets/` inside it.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        let root = open_private(None, path, path)?;
        let registry = open_private(Some(root.as_fd()), Path::new("registry"), path)?;
        let sockets = open_private(Some(root.as_fd()), Path::new("sockets"), path)?;
        Ok(Self {
            path: path.to_owned(),
            root,
            registry,
            sockets,
        })
    }

    /// The path it was opened at (for messages and published URLs; it is
    /// not used to reach anything).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `registry/` directory's handle.
    pub fn registry_fd(&self) -> BorrowedFd<'_> {
        self.registry.as_fd()
    }

    /// The `sockets/` directory's handle.
    pub fn sockets_fd(&self) -> BorrowedFd<'_> {
        self.sockets.as_fd()
    }

    /// The runtime directory's own handle.
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The path of `name` in `sockets/` as published (under [`path`](Self::path)).
    pub fn socket_path(&self, name: &str) -> PathBuf {
        self.path.join("sockets").join(name)
    }

    /// If `path` is a socket this directory hands out (`<path>/sockets/<name>`),
    /// its name.
    pub fn socket_name<'a>(&self, path: &'a Path) -> Option<&'a str> {
        if path.parent()? != self.path.join("sockets") {
            return None;
        }
        let name = path.file_name()?.to_str()?;
        (!name.starts_with('.')).then_some(name)
    }
}

/// A path that reaches `name` inside the directory open at `dir` without
/// looking up any path the directory was reached by: the kernel's own link
/// to the open directory, `/proc/self/fd/<fd>/<name>`. Used to bind and
/// connect Unix sockets, which have no `*at` call.
pub fn path_via_fd(dir: BorrowedFd<'_>, name: &str) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// What is wrong with a symbolic link where the directory should be.
const SYMLINK: &str = "it is a symbolic link, which is never followed (someone may have planted \
                       it to redirect this directory)";

/// Opens directory `name` (relative to `at`, or a path when `at` is
/// `None`), making it with mode 0700 if missing, and checks it on the
/// handle. `shown` is the runtime directory named in errors.
fn open_private(
    at: Option<BorrowedFd<'_>>,
    name: &Path,
    shown: &Path,
) -> Result<OwnedFd, RegistryError> {
    let shown_path = match at {
        Some(_) => shown.join(name),
        None => name.to_owned(),
    };
    let io_err = |source: io::Error| RegistryError::Io {
        path: shown_path.clone(),
        source,
    };
    let insecure = |reason: String| RegistryError::Insecure {
        path: shown_path.clone(),
        reason,
    };
    // The parent is trusted (it is the runtime directory's handle, or a
    // place the user chose or the defaults picked); only the last component
    // is made and opened without following links.
    let (parent, leaf): (OwnedFd, &Path) = match at {
        Some(dir) => (
            rustix::io::fcntl_dupfd_cloexec(dir, 0).map_err(|e| io_err(e.into()))?,
            name,
        ),
        None => {
            let leaf = name.file_name().map(Path::new).ok_or_else(|| {
                insecure("the path has no final component to make a directory from".into())
            })?;
            let parent = match name.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(parent) => parent,
                None => Path::new("."),
            };
            std::fs::create_dir_all(parent).map_err(|source| RegistryError::Io {
                path: parent.to_owned(),
                source,
            })?;
            let fd = rustix::fs::open(
                parent,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| RegistryError::Io {
                path: parent.to_owned(),
                source: e.into(),
            })?;
            (fd, leaf)
        }
    };
    match rustix::fs::mkdirat(&parent, leaf, Mode::RWXU) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(io_err(e.into())),
    }
    let opened = rustix::fs::openat(
        &parent,
        leaf,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    );
    let fd = match opened {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return Err(insecure(SYMLINK.to_owned())),
        Err(rustix::io::Errno::NOTDIR) => {
            let what = match rustix::fs::statat(&parent, leaf, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Symlink => SYMLINK.to_owned(),
                    // It was something else a moment ago: swapped meanwhile.
                    FileType::Directory => format!(
                        "it changed while being opened (it was not a directory, now it is \
                         one): something swaps it, perhaps with a symbolic link; {SYMLINK}"
                    ),
                    other => format!(
                        "it exists and is not a directory (a {other:?} owned by uid {})",
                        st.st_uid
                    ),
                },
                Err(_) => "it is not a directory".to_owned(),
            };
            return Err(insecure(what));
        }
        Err(e) => return Err(io_err(e.into())),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_err(e.into()))?;
    let uid = crate::sys::uid();
    if stat.st_uid != uid {
        return Err(insecure(format!(
            "it belongs to uid {} but this process runs as uid {uid} (another user may have \
             made it first)",
            stat.st_uid
        )));
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        // Our own directory, too open: tighten it, on the handle that was
        // checked, rather than refuse.
        tracing::warn!(path = %shown_path.display(), mode = format!("{mode:o}"), "tightening the runtime directory to 0700");
        rustix::fs::fchmod(&fd, Mode::RWXU).map_err(|e| io_err(e.into()))?;
    }
    Ok(fd)
}

/// Creates `dir` (and parents) with mode 0700, or checks that an existing
/// one belongs to this user and is not open to others, without following a
/// symbolic link at `dir`.
pub fn ensure_private_dir(dir: &Path) -> Result<(), RegistryError> {
    open_private(None, dir, dir).map(drop)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The default runtime directory under the given environment.
    fn chosen(env: &[(&str, &Path)], temp: &Path) -> PathBuf {
        let env: Vec<(String, std::ffi::OsString)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_os_str().to_owned()))
            .collect();
        choose_runtime_dir(
            |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            temp,
            crate::sys::uid(),
        )
    }

    #[test]
    fn the_default_is_the_first_place_no_other_user_can_squat() {
        let tmp = tempfile::tempdir().unwrap();
        let temp = tmp.path().join("tmp");
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        let xdg = tmp.path().join("xdg");
        let own = tmp.path().join("own");
        let uid = crate::sys::uid();
        // The variable first, then $XDG_RUNTIME_DIR, then a private home,
        // and only then the shared temporary directory.
        assert_eq!(
            chosen(
                &[
                    (RUNTIME_DIR_ENV, &own),
                    ("XDG_RUNTIME_DIR", &xdg),
                    ("HOME", &home)
                ],
                &temp
            ),
            own
        );
        assert_eq!(
            chosen(&[("XDG_RUNTIME_DIR", &xdg), ("HOME", &home)], &temp),
            xdg.join("switchyard")
        );
        assert_eq!(
            chosen(&[("HOME", &home)], &temp),
            home.join(".switchyard").join("run")
        );
        assert_eq!(chosen(&[], &temp), temp.join(format!("switchyard-{uid}")));
        // Empty values count as unset.
        assert_eq!(
            chosen(&[(RUNTIME_DIR_ENV, Path::new("")), ("HOME", &home)], &temp),
            home.join(".switchyard").join("run")
        );
        // A home others may write to is passed over: they could plant the
        // directory there.
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            chosen(&[("HOME", &home)], &temp),
            temp.join(format!("switchyard-{uid}"))
        );
        // So is a home that is not a directory, or missing.
        assert_eq!(
            chosen(&[("HOME", &tmp.path().join("missing"))], &temp),
            temp.join(format!("switchyard-{uid}"))
        );
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn a_symlinked_runtime_dir_is_refused_and_its_target_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("victim");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = tmp.path().join("rt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = RuntimeDir::open(&link).unwrap_err();
        assert!(matches!(err, RegistryError::Insecure { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(err.to_string().contains("SWITCHYARD_RUNTIME_DIR"), "{err}");
        assert_eq!(mode(&target), 0o755, "the target's mode is unchanged");
        assert_eq!(
            std::fs::read_dir(&target).unwrap().count(),
            0,
            "nothing was written into the target"
        );
        // A symlinked subdirectory is refused the same way.
        let rt = tmp.path().join("rt2");
        std::fs::create_dir(&rt).unwrap();
        std::os::unix::fs::symlink(&target, rt.join("registry")).unwrap();
        let err = RuntimeDir::open(&rt).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(mode(&target), 0o755);
    }

    #[test]
    fn a_file_at_the_path_is_an_error_naming_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let squat = tmp.path().join("rt");
        std::fs::write(&squat, b"squatter").unwrap();
        let err = RuntimeDir::open(&squat).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not a directory"), "{msg}");
        assert!(msg.contains("SWITCHYARD_RUNTIME_DIR"), "{msg}");
    }

    #[test]
    fn a_directory_of_another_user_is_refused_naming_the_fix() {
        if !rustix::process::geteuid().is_root() {
            println!("skipping: needs root to make a directory another user owns");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let squat = tmp.path().join("rt");
        std::fs::create_dir(&squat).unwrap();
        std::fs::set_permissions(&squat, std::fs::Permissions::from_mode(0o777)).unwrap();
        rustix::fs::chown(
            &squat,
            Some(rustix::fs::Uid::from_raw(65534)),
            Some(rustix::fs::Gid::from_raw(65534)),
        )
        .unwrap();
        let err = RuntimeDir::open(&squat).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("belongs to uid 65534"), "{msg}");
        assert!(msg.contains("SWITCHYARD_RUNTIME_DIR"), "{msg}");
        assert_eq!(
            mode(&squat),
            0o777,
            "another user's directory is not chmod'ed"
        );
    }

    #[test]
    fn an_own_open_directory_is_tightened_through_the_handle() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tmp.path().join("a").join("rt");
        let dir = RuntimeDir::open(&rt).unwrap();
        assert_eq!(mode(&rt), 0o700);
        assert_eq!(mode(&rt.join("registry")), 0o700);
        assert_eq!(mode(&rt.join("sockets")), 0o700);
        drop(dir);
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = RuntimeDir::open(&rt).unwrap();
        assert_eq!(mode(&rt), 0o700);
        assert_eq!(
            dir.socket_name(&rt.join("sockets").join("1-0.sock")),
            Some("1-0.sock")
        );
        assert_eq!(dir.socket_name(&rt.join("1-0.sock")), None);
    }
}
