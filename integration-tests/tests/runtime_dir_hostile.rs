//! A hostile local user against the runtime directory: a symbolic link at
//! it, a squatted default path, a link swapped back and forth while clients
//! connect by name, and a process answering at a socket the registry says
//! belongs to another.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard::{Channel, Code};
use switchyard_integration_tests::{ServerProcess, TestingClient, test_server_exe, within};

const LIMIT: Duration = Duration::from_secs(240);

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Runs `test-server` with this environment and returns (success, stderr).
fn start_fails(env: &[(&str, &Path)], remove: &[&str]) -> (bool, String) {
    let mut command = Command::new(test_server_exe());
    for key in remove {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .expect("test-server runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_symlinked_runtime_dir_is_refused_and_its_target_is_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new().prefix("sy-it-").tempdir().unwrap();
    let target = tmp.path().join("someone-elses");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = tmp.path().join("rt");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (ok, stderr) = start_fails(&[("SWITCHYARD_RUNTIME_DIR", &link)], &[]);
    assert!(!ok, "the server must not start in a symlinked runtime dir");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(stderr.contains("SWITCHYARD_RUNTIME_DIR"), "{stderr}");
    assert_eq!(mode(&target), 0o755, "the link's target was not chmod'ed");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing (registry/, sockets/) was written into the target"
    );
}

#[test]
fn a_squatted_default_runtime_dir_is_an_error_naming_the_fix() {
    // The default, with no SWITCHYARD_RUNTIME_DIR, no XDG_RUNTIME_DIR and no
    // usable home, is $TMPDIR/switchyard-<uid>. Someone made it first: a
    // file there, then a symlink there.
    let tmp = tempfile::Builder::new().prefix("sy-it-").tempdir().unwrap();
    let uid = rustix::process::getuid().as_raw();
    let squat = tmp.path().join(format!("switchyard-{uid}"));
    let no_home = tmp.path().join("no-home");
    let remove = ["SWITCHYARD_RUNTIME_DIR", "XDG_RUNTIME_DIR"];
    let env = [("TMPDIR", tmp.path()), ("HOME", no_home.as_path())];

    std::fs::write(&squat, b"squatter").unwrap();
    let (ok, stderr) = start_fails(&env, &remove);
    assert!(!ok, "the server must not start");
    assert!(stderr.contains(&squat.display().to_string()), "{stderr}");
    assert!(stderr.contains("not a directory"), "{stderr}");
    assert!(stderr.contains("set SWITCHYARD_RUNTIME_DIR"), "{stderr}");
    std::fs::remove_file(&squat).unwrap();

    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &squat).unwrap();
    let (ok, stderr) = start_fails(&env, &remove);
    assert!(!ok, "the server must not start");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(stderr.contains("set SWITCHYARD_RUNTIME_DIR"), "{stderr}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// Copies the victim's registry entry for `testing` into `impostor_dir`'s
/// registry as the newest, and links the victim's socket name there to the
/// impostor's socket: a client that reads the impostor's directory, or
/// resolves the victim's socket path while the link points there, reaches
/// the impostor.
fn plant_impostor(victim: &ServerProcess, impostor: &ServerProcess) {
    let registry = victim.dir().join("registry");
    let file = registry.join(format!("testing@{}.json", victim.pid()));
    let text = std::fs::read_to_string(&file).unwrap();
    let mut entry: switchyard::discovery::Entry = serde_json::from_str(&text).unwrap();
    entry.published_ms += 60_000;
    std::fs::write(
        impostor
            .dir()
            .join("registry")
            .join(format!("testing@{}.json", victim.pid())),
        serde_json::to_vec(&entry).unwrap(),
    )
    .unwrap();
    let victim_socket = victim.endpoint("unix");
    let victim_socket = Path::new(victim_socket.strip_prefix("unix://").unwrap());
    let impostor_socket = impostor.endpoint("unix");
    let impostor_socket = impostor_socket.strip_prefix("unix://").unwrap();
    std::os::unix::fs::symlink(
        impostor_socket,
        impostor
            .dir()
            .join("sockets")
            .join(victim_socket.file_name().unwrap()),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_dir_swapped_with_a_link_to_an_impostor_never_reaches_it() {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    let calls: u64 = std::env::var("SY_SWAP_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4000);
    let base = tempfile::Builder::new()
        .prefix("sy-swap-")
        .tempdir()
        .unwrap();
    let victim_dir = tempfile::Builder::new()
        .prefix("rt-")
        .tempdir_in(base.path())
        .unwrap();
    let rt = victim_dir.path().to_owned();
    let victim = ServerProcess::start_in(victim_dir, &[]);
    let impostor = ServerProcess::start(&[]);
    plant_impostor(&victim, &impostor);
    // `link` points at the impostor's directory; the swapper exchanges it
    // with the real directory as fast as it can.
    let link = base.path().join("link");
    std::os::unix::fs::symlink(impostor.dir(), &link).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, rt, link) = (stop.clone(), swaps.clone(), rt.clone(), link.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if renameat_with(CWD, &rt, CWD, &link, RenameFlags::EXCHANGE).is_ok() {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Leave the real directory at `rt`, for the cleanup.
            if std::fs::symlink_metadata(&rt).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = renameat_with(CWD, &rt, CWD, &link, RenameFlags::EXCHANGE);
            }
        })
    };
    // Stops the swapper however this test ends (a failed assertion too).
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop_guard = StopOnDrop(stop.clone());
    let (mut answered, mut refused, mut unauthenticated, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut samples = Vec::new();
    let started = Instant::now();
    within(LIMIT, async {
        for i in 0..calls {
            let connected = Channel::builder()
                .runtime_dir(&rt)
                .connect_timeout(Duration::from_secs(5))
                .connect("testing")
                .await;
            let result = match connected {
                Ok(channel) => TestingClient::new(channel).add(i as i64, 1).await,
                Err(status) => Err(status),
            };
            match result {
                Ok(sum) => {
                    assert_eq!(sum, i as i64 + 1);
                    answered += 1;
                }
                Err(status) if status.message().contains("symbolic link") => refused += 1,
                Err(status) if status.code() == Code::Unauthenticated => {
                    unauthenticated += 1;
                    if samples.len() < 2 {
                        samples.push(status.to_string());
                    }
                }
                Err(status) => {
                    other += 1;
                    if samples.len() < 4 {
                        samples.push(status.to_string());
                    }
                }
            }
        }
    })
    .await;
    drop(stop_guard);
    swapper.join().unwrap();
    let elapsed = started.elapsed();
    // Ask each server directly (by address, not through the swapped
    // directory) how many calls it answered.
    let count = |server: &ServerProcess| {
        let url = server.endpoint("unix");
        async move {
            let channel = Channel::connect(&url).await.unwrap();
            TestingClient::new(channel).requests_seen().await.unwrap()
        }
    };
    let impostor_answered = count(&impostor).await;
    let victim_answered = count(&victim).await;
    println!(
        "{calls} calls by name in {elapsed:?} with {} swaps: {answered} answered (victim \
         counted {victim_answered}), {refused} refused as a symbolic link, {unauthenticated} \
         refused as unauthenticated, {other} other errors; the impostor answered \
         {impostor_answered}; samples: {samples:?}",
        swaps.load(Ordering::Relaxed)
    );
    assert_eq!(impostor_answered, 0, "no call may reach the impostor");
    assert_eq!(
        victim_answered, answered,
        "every answer came from the victim"
    );
    assert_eq!(answered + refused + unauthenticated + other, calls);
    assert!(
        swaps.load(Ordering::Relaxed) > 100,
        "the swap loop must actually race the calls"
    );
    assert!(answered > 0, "some calls get through between swaps");
    assert!(refused > 0, "some connects meet the link and refuse it");
    drop(impostor);
    drop(victim);
    let _ = std::fs::remove_file(&link);
}

#[tokio::test]
async fn a_process_answering_at_a_registered_socket_is_checked_against_the_entry() {
    // The registry says this test process serves `testing` (a live pid with
    // its start time), at the socket where another process, the impostor,
    // listens.
    let impostor = ServerProcess::start(&[]);
    let me = std::process::id();
    let entry = switchyard::discovery::Entry {
        name: "testing".into(),
        pid: me,
        start_time: switchyard::sys::process_start_time(me),
        boot_id: String::new(),
        ipc_ns: 0,
        endpoints: vec![impostor.endpoint("unix").parse().unwrap()],
        unknown_endpoints: Vec::new(),
        services: vec!["Testing".into()],
        published_ms: u64::MAX / 2,
        debug: None,
    };
    let registry = switchyard::discovery::Registry::open(impostor.dir()).unwrap();
    let _published = registry.publish(entry).unwrap();
    within(Duration::from_secs(30), async {
        for prefer in [None, Some(switchyard::Transport::Unix)] {
            let mut builder = Channel::builder().runtime_dir(impostor.dir());
            if let Some(prefer) = prefer {
                builder = builder.prefer(prefer);
            }
            let err = builder.connect("testing").await.unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{err}");
            let msg = err.message();
            assert!(msg.contains(&format!("names pid {me}")), "{msg}");
            assert!(
                msg.contains(&format!("answering there is pid {}", impostor.pid())),
                "{msg}"
            );
            assert!(msg.contains("nothing was sent"), "{msg}");
        }
        let channel = Channel::connect(&impostor.endpoint("unix")).await.unwrap();
        let seen = TestingClient::new(channel).requests_seen().await.unwrap();
        assert_eq!(seen, 0, "the impostor answered nothing");
    })
    .await;
}

#[tokio::test]
async fn an_impostor_of_another_uid_is_refused_by_its_credentials() {
    use std::os::unix::process::CommandExt;
    if !rustix::process::geteuid().is_root() {
        println!("skipping: needs root to run the impostor as a second user (uid 65534)");
        return;
    }
    const NOBODY: u32 = 65534;
    // The impostor: a server of another user, in a directory of its own.
    let impostor_dir = tempfile::Builder::new().prefix("sy-it-").tempdir().unwrap();
    rustix::fs::chown(
        impostor_dir.path(),
        Some(rustix::fs::Uid::from_raw(NOBODY)),
        Some(rustix::fs::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    let mut command = Command::new(test_server_exe());
    command.uid(NOBODY).gid(NOBODY);
    let impostor = ServerProcess::start_command(command, impostor_dir, &[]);
    // Our registry names it, live pid and all (as a tampered registry, or
    // a socket path the other user controls, would).
    let ours = tempfile::Builder::new().prefix("sy-it-").tempdir().unwrap();
    let registry = switchyard::discovery::Registry::open(ours.path()).unwrap();
    let pid = impostor.pid();
    let entry = switchyard::discovery::Entry {
        name: "testing".into(),
        pid,
        start_time: switchyard::sys::process_start_time(pid),
        boot_id: String::new(),
        ipc_ns: 0,
        endpoints: vec![impostor.endpoint("unix").parse().unwrap()],
        unknown_endpoints: Vec::new(),
        services: vec!["Testing".into()],
        published_ms: 1,
        debug: None,
    };
    let _published = registry.publish(entry).unwrap();
    within(Duration::from_secs(30), async {
        let err = Channel::builder()
            .runtime_dir(ours.path())
            .connect("testing")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
        let msg = err.message();
        assert!(msg.contains("(uid 0)"), "{msg}");
        assert!(msg.contains(&format!("(uid {NOBODY})")), "{msg}");
        let channel = Channel::connect(&impostor.endpoint("unix")).await.unwrap();
        let seen = TestingClient::new(channel).requests_seen().await.unwrap();
        assert_eq!(seen, 0, "the impostor answered nothing");
        println!("second-uid impostor refused: {err}");
    })
    .await;
}
