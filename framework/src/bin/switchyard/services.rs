//! `switchyard services`: the live entries of the local registry.

use std::path::PathBuf;

use switchyard::debug::table;
use switchyard::discovery::{Registry, runtime_dir};

/// Removes the message queue a server in `dir` (default: the runtime
/// directory) keeps for `service`, for good, with the one-way calls waiting
/// in it; refused while a live process publishes the service.
pub(crate) fn remove_queue(service: &str, dir: Option<PathBuf>) -> Result<(), String> {
    let dir = dir.unwrap_or_else(runtime_dir);
    remove_queue_in(service, &dir)
}

#[cfg(target_os = "linux")]
fn remove_queue_in(service: &str, dir: &std::path::Path) -> Result<(), String> {
    use switchyard::transport::mqueue::{remove, service_queue_name};
    if dir.join("registry").is_dir() {
        let registry = Registry::open(dir).map_err(|err| err.to_string())?;
        let live = registry.list().map_err(|err| err.to_string())?;
        if let Some(entry) = live
            .iter()
            .find(|e| e.services.iter().any(|s| s.eq_ignore_ascii_case(service)))
        {
            return Err(format!(
                "{service} is served by the live process {} (published as {:?}); stop it first, \
                 or build it with ServerBuilder::remove_queues_on_shutdown(true)",
                entry.pid, entry.name
            ));
        }
    }
    let name = service_queue_name(dir, service);
    if dir.join("registry").is_dir()
        && let Ok(registry) = Registry::open(dir)
    {
        registry.forget_kept_queue(service);
    }
    match remove(&name) {
        Ok(Some(discarded)) => {
            println!("removed queue {name} of {service} ({discarded} calls discarded)");
            Ok(())
        }
        Ok(None) => {
            println!(
                "no queue {name} for {service} in {}: nothing to remove",
                dir.display()
            );
            Ok(())
        }
        Err(err) => Err(format!("could not remove queue {name}: {err}")),
    }
}

#[cfg(not(target_os = "linux"))]
fn remove_queue_in(_service: &str, _dir: &std::path::Path) -> Result<(), String> {
    Err("message queues exist only on Linux".into())
}

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
        let dead = registry.prune_dead().map_err(|err| err.to_string())?;
        let pruned = dead.len();
        let queues = prune_queues(&dir, &registry, &dead)?;
        let message = format!(
            "pruned {pruned} {} of dead processes{queues}",
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
        print_kept_queues(&registry);
    }
    Ok(())
}

/// Lists the queues stopped servers kept (their one-way calls wait there for
/// the next start), and how to remove one for good.
fn print_kept_queues(registry: &Registry) {
    let Ok(kept) = registry.kept_queues() else {
        return;
    };
    if kept.is_empty() {
        return;
    }
    println!("queues kept by stopped servers (one-way calls wait in them for the next start):");
    for queue in kept {
        #[cfg(target_os = "linux")]
        let waiting = match switchyard::transport::mqueue::waiting(&queue.queue) {
            Ok(Some(messages)) => format!("{messages} waiting"),
            Ok(None) | Err(_) => "gone".to_owned(),
        };
        #[cfg(not(target_os = "linux"))]
        let waiting = String::new();
        println!(
            "  {}  {}  {waiting}  (stopped by pid {}; remove for good: switchyard services \
             --remove-queue {})",
            queue.service, queue.queue, queue.pid, queue.service
        );
    }
}

/// Removes the message queues of services that a dead process served and no
/// live one does: the explicit step that discards one-way calls still
/// waiting for a server that will not come back.
#[cfg(target_os = "linux")]
fn prune_queues(
    dir: &std::path::Path,
    registry: &Registry,
    dead: &[switchyard::discovery::Entry],
) -> Result<String, String> {
    use switchyard::transport::mqueue::{self, service_queue_name};
    let live = registry.list().map_err(|err| err.to_string())?;
    let served = |service: &str| {
        live.iter()
            .any(|e| e.services.iter().any(|s| s.eq_ignore_ascii_case(service)))
    };
    let mut removed = Vec::new();
    for service in dead.iter().flat_map(|e| e.services.iter()) {
        if served(service) {
            continue;
        }
        let name = service_queue_name(dir, service);
        if mqueue::limits().is_ok()
            && let Ok(Some(waiting)) = mqueue::remove(&name)
        {
            removed.push(format!("{name} ({waiting} calls discarded)"));
        }
    }
    Ok(if removed.is_empty() {
        String::new()
    } else {
        format!(" and their queues {}", removed.join(", "))
    })
}

#[cfg(not(target_os = "linux"))]
fn prune_queues(
    _dir: &std::path::Path,
    _registry: &Registry,
    _dead: &[switchyard::discovery::Entry],
) -> Result<String, String> {
    Ok(String::new())
}
