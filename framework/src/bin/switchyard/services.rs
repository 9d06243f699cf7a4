//! `switchyard services`: the live entries of the local registry.

use std::path::PathBuf;

use switchyard::debug::table;
use switchyard::discovery::{Registry, runtime_dir};

/// Lists the registry in `dir` (default: the runtime directory); with
/// `prune`, first removes the entries and sockets of dead processes.
pub(crate) fn run(prune: bool, json: bool, dir: Option<PathBuf>) -> Result<(), String> {
    let dir = dir.unwrap_or_else(runtime_dir);
    if !dir.join("registry").is_dir() {
        // Nothing was ever published here; do not create the directory.
        if prune && !json {
            println!("pruned 0 entries");
        }
        if json {
            println!("[]");
        } else {
            println!(
                "no registry in {}: no switchyard server has published there (servers in \
                 another runtime directory: pass --runtime-dir or set SWITCHYARD_RUNTIME_DIR)",
                dir.display()
            );
        }
        return Ok(());
    }
    let registry = Registry::open(&dir).map_err(|err| err.to_string())?;
    if prune {
        // POSIX message queues of dead processes belong here too, but no
        // server creates queues yet and registry entries do not name them:
        // without that, `transport::mqueue::prune` could not tell a live
        // owner's queue from a dead one's. Wire it in when entries list
        // their queues.
        let pruned = registry.prune().map_err(|err| err.to_string())?;
        let message = format!(
            "pruned {pruned} {} of dead processes",
            if pruned == 1 { "entry" } else { "entries" }
        );
        // Keep stdout parseable with --json.
        if json {
            eprintln!("{message}");
        } else {
            println!("{message}");
        }
    }
    let entries = registry.list().map_err(|err| err.to_string())?;
    if json {
        let text = serde_json::to_string_pretty(&entries)
            .map_err(|err| format!("encoding the entries as JSON: {err}"))?;
        println!("{text}");
    } else {
        println!("registry: {}", dir.join("registry").display());
        print!("{}", table::services_table(&entries));
    }
    Ok(())
}
