//! The per-user runtime directory that holds the registry and sockets.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::registry::RegistryError;

/// Where the runtime directory is: `SWITCHYARD_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/switchyard`, else `/tmp/switchyard-<uid>`.
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHYARD_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("switchyard");
    }
    PathBuf::from(format!("/tmp/switchyard-{}", crate::sys::uid()))
}

/// Creates `dir` (and parents) with mode 0700, or checks that an existing
/// one belongs to this user and is not open to others.
pub fn ensure_private_dir(dir: &Path) -> Result<(), RegistryError> {
    let io_err = |source| RegistryError::Io {
        path: dir.to_owned(),
        source,
    };
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(source) => return Err(io_err(source)),
    }
    let meta = std::fs::metadata(dir).map_err(io_err)?;
    let uid = crate::sys::uid();
    if meta.uid() != uid {
        return Err(RegistryError::Insecure {
            path: dir.to_owned(),
            reason: format!(
                "it belongs to uid {} but this process runs as uid {uid}",
                meta.uid()
            ),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        // Our own directory, too open: tighten it rather than refuse.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    }
    Ok(())
}
