//! Several hosts on one machine: network namespaces joined by veth pairs to
//! a bridge, for tests of what crosses a network (QUIC, TCP, link faults,
//! dropped UDP, loss and delay).
//!
//! Needs root and iproute2's `ip`; [`Lan::new`] says why it cannot run
//! otherwise, and the tests skip with that reason. Every namespace gets a
//! name unique to the process and the LAN, so tests run in parallel, and is
//! removed (with every process still in it) when the [`Lan`] is dropped.
//! The bridge lives in a namespace of its own, so nothing touches the
//! machine's own network.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static LAN_SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command, returning its output or why it failed.
fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// One simulated host: a network namespace with one interface, `eth0`.
#[derive(Debug)]
pub struct Host {
    /// The namespace's name (for `ip netns exec`).
    pub ns: String,
    /// The address of its `eth0` (a /24 shared with the other hosts).
    pub ip: Ipv4Addr,
    /// Its cable's end on the bridge, in the switch namespace.
    port: String,
    switch: String,
}

impl Host {
    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<Output, String> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `program args` inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let mut all = vec!["netns", "exec", self.ns.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns]).arg(program);
        command
    }

    /// The test server on this host, listening on QUIC and TCP on all its
    /// addresses, with no Unix socket (so nothing moves a client to shared
    /// memory: it is "another machine"); stopped when dropped.
    pub fn serve_test_server(&self) -> crate::ServerProcess {
        self.serve_test_server_with(&[])
    }

    /// [`serve_test_server`](Self::serve_test_server) with more test-server
    /// flags.
    pub fn serve_test_server_with(&self, more: &[&str]) -> crate::ServerProcess {
        let dir = tempfile::Builder::new()
            .prefix("sy-netns-")
            .tempdir()
            .expect("a temp dir");
        let mut args = vec!["--quic", "0.0.0.0:0", "--tcp-at", "0.0.0.0:0", "--no-unix"];
        args.extend_from_slice(more);
        crate::ServerProcess::start_command(self.command(&crate::test_server_exe()), dir, &args)
    }

    /// Pulls the host's cable: its port on the bridge goes down.
    pub fn unplug(&self) {
        run(
            "ip",
            &["-n", &self.switch, "link", "set", &self.port, "down"],
        )
        .expect("unplug");
    }

    /// Plugs the cable back in.
    pub fn plug(&self) {
        run("ip", &["-n", &self.switch, "link", "set", &self.port, "up"]).expect("plug");
    }

    /// Drops every UDP packet arriving at this host, with nftables or else
    /// iptables; says which was used, or why neither could.
    pub fn drop_udp(&self) -> Result<&'static str, String> {
        let nft = self
            .exec("nft", &["add", "table", "inet", "switchyard_test"])
            .and_then(|_| {
                self.exec(
                    "nft",
                    &[
                        "add chain inet switchyard_test input { type filter hook input priority 0 ; }",
                    ],
                )
            })
            .and_then(|_| {
                self.exec(
                    "nft",
                    &["add", "rule", "inet", "switchyard_test", "input", "meta", "l4proto", "udp", "drop"],
                )
            });
        let nft_err = match nft {
            Ok(_) => return Ok("nftables"),
            Err(err) => err,
        };
        match self.exec("iptables", &["-A", "INPUT", "-p", "udp", "-j", "DROP"]) {
            Ok(_) => Ok("iptables"),
            Err(ipt_err) => Err(format!("{nft_err}; {ipt_err}")),
        }
    }

    /// Drops `percent` of the packets arriving at this host, at random:
    /// with `tc netem` on what leaves it where the kernel has netem, else
    /// with an nftables `numgen random` rule on what arrives. Says which.
    pub fn lose(&self, percent: u32) -> Result<&'static str, String> {
        let loss = format!("{percent}%");
        let netem_err = match self.netem(Some(&["loss", &loss])) {
            Ok(()) => return Ok("tc netem"),
            Err(err) => err,
        };
        let rule = format!(
            "add table inet switchyard_loss ; add chain inet switchyard_loss input {{ type \
             filter hook input priority 0 ; }} ; add rule inet switchyard_loss input numgen \
             random mod 100 < {percent} drop"
        );
        match self.exec("nft", &[&rule]) {
            Ok(_) => Ok("nftables numgen"),
            Err(nft_err) => Err(format!("{netem_err}; {nft_err}")),
        }
    }

    /// Undoes [`lose`](Self::lose).
    pub fn stop_losing(&self) {
        let _ = self.netem(None);
        let _ = self.exec("nft", &["delete", "table", "inet", "switchyard_loss"]);
    }

    /// Shapes what leaves this host with `tc netem` (e.g. `["loss",
    /// "20%"]`, `["delay", "50ms"]`); `None` removes the shaping.
    pub fn netem(&self, params: Option<&[&str]>) -> Result<(), String> {
        match params {
            Some(params) => {
                let mut args = vec!["qdisc", "replace", "dev", "eth0", "root", "netem"];
                args.extend_from_slice(params);
                self.exec("tc", &args).map(drop)
            }
            None => self
                .exec("tc", &["qdisc", "del", "dev", "eth0", "root"])
                .map(drop),
        }
    }

    /// Runs `f` on a thread of its own that has entered this namespace:
    /// every socket it opens (a tokio runtime built inside `f`, say) is on
    /// this host's network.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = std::fs::File::open(&path).expect("the namespace file");
                    rustix::thread::move_into_link_name_space(
                        ns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .expect("setns into the host's network namespace");
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `future` to completion on a single-threaded tokio runtime in
    /// this namespace ([`enter`](Self::enter)), failing after `limit`.
    pub fn run<T: Send>(&self, limit: Duration, future: impl Future<Output = T> + Send) -> T {
        self.enter(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(async {
                    tokio::time::timeout(limit, future)
                        .await
                        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
                })
        })
    }
}

/// Hosts on one bridge.
#[derive(Debug)]
pub struct Lan {
    /// The hosts, 10.77.0.1, 10.77.0.2, ...
    pub hosts: Vec<Host>,
    switch: String,
}

impl Lan {
    /// [`new`](Self::new), or `None` after printing why `test` skips.
    pub fn or_skip(count: usize, test: &str) -> Option<Self> {
        Self::new(count)
            .inspect_err(|why| eprintln!("skipping {test}: {why}"))
            .ok()
    }

    /// `count` hosts joined by a bridge, or why they cannot be made here
    /// (not root, no `ip`, namespaces not permitted).
    pub fn new(count: usize) -> Result<Self, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("network namespaces need root".into());
        }
        run("ip", &["-V"]).map_err(|err| format!("iproute2 is missing: {err}"))?;
        let id = format!(
            "{}x{}",
            std::process::id(),
            LAN_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("sy{id}sw");
        run("ip", &["netns", "add", &switch])?;
        let mut lan = Self {
            hosts: Vec::new(),
            switch: switch.clone(),
        };
        let ipn = |args: &[&str]| {
            let mut all = vec!["-n", switch.as_str()];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        ipn(&["link", "add", "br0", "type", "bridge"])?;
        ipn(&["link", "set", "br0", "up"])?;
        for i in 0..count {
            let ns = format!("sy{id}h{i}");
            // Interface names have at most 15 bytes.
            let port = format!("p{i}");
            run("ip", &["netns", "add", &ns])?;
            let ip = Ipv4Addr::new(10, 77, 0, u8::try_from(i + 1).expect("few hosts"));
            let host = Host {
                ns: ns.clone(),
                ip,
                port: port.clone(),
                switch: switch.clone(),
            };
            lan.hosts.push(host);
            run(
                "ip",
                &[
                    "link", "add", "name", &port, "netns", &switch, "type", "veth", "peer", "name",
                    "eth0", "netns", &ns,
                ],
            )?;
            ipn(&["link", "set", &port, "master", "br0", "up"])?;
            let host = lan.hosts.last().expect("just pushed");
            host.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            host.ip(&["link", "set", "eth0", "up"])?;
            host.ip(&["link", "set", "lo", "up"])?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().map(|h| &h.ns).chain([&self.switch]) {
            // Whatever still runs in it first: a namespace with processes
            // in it outlives `ip netns del`.
            if let Ok(out) = run("ip", &["netns", "pids", ns]) {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Some(pid) = pid.parse().ok().and_then(rustix::process::Pid::from_raw) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}
