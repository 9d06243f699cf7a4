//! A serving child in a network namespace of its own, reached through a
//! veth pair, so that packets cross a network device instead of loopback
//! (the quic-over-veth rows of [`crate::bench_quic`], the compression table
//! of [`crate::bench_compress`]). Needs root and iproute2 (`ip`, and `tc`
//! to shape the pair).
//!
//! The namespace and the pair carry this process's pid in their names and
//! are removed when the [`Veth`] is dropped, whatever happened.

use std::ffi::OsStr;
use std::process::Command;

use crate::bench::{CHILD_ENV, ChildGuard, announcing, child_command};

/// Set in a child: the address to bind (default `127.0.0.1:0`).
pub(crate) const BIND_ENV: &str = "SWITCHYARD_BENCH_BIND";

/// Where a child binds: [`BIND_ENV`], else `127.0.0.1:0`.
pub(crate) fn bind_addr() -> Result<std::net::SocketAddr, String> {
    match std::env::var(BIND_ENV) {
        Ok(addr) => addr
            .parse()
            .map_err(|e| format!("{BIND_ENV}={addr:?}: {e}")),
        Err(_) => Ok((std::net::Ipv4Addr::LOCALHOST, 0).into()),
    }
}

/// Starts this binary as a child in `role` (in `veth`'s namespace, told to
/// bind to its address through [`BIND_ENV`], if given) with `env` added,
/// and reads the first line it prints (`what`).
pub(crate) fn spawn(
    role: &str,
    veth: Option<&Veth>,
    env: &[(&str, &OsStr)],
    what: &str,
) -> Result<(ChildGuard, String), String> {
    let (child, _stdout, line) = match veth {
        None => announcing(child_command(role)?, role, env, what)?,
        Some(veth) => {
            let bind = format!("{}:0", veth.child_addr);
            let mut env = env.to_vec();
            env.push((BIND_ENV, OsStr::new(&bind)));
            announcing(veth.command(role)?, role, &env, what)?
        }
    };
    Ok((child, line))
}

/// Whether this process may make network namespaces; why not otherwise.
pub(crate) fn may_make_namespaces() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("network namespaces are Linux only".to_owned());
    }
    if !rustix::process::geteuid().is_root() {
        return Err("needs root to make a network namespace".to_owned());
    }
    Ok(())
}

/// A network namespace holding one end of a veth pair, the other end here;
/// both are removed on drop.
pub(crate) struct Veth {
    namespace: String,
    /// This side's end.
    outer: String,
    /// The namespace's end.
    inner: String,
    /// The children's address, in the namespace.
    child_addr: std::net::Ipv4Addr,
}

impl Veth {
    /// Makes the namespace and the pair, addressed from 10.240.0.0/12 by
    /// this process's pid (a /30 each), so that two runs do not collide.
    pub(crate) fn new() -> Result<Self, String> {
        let pid = std::process::id();
        let (a, b) = (240 + (pid >> 14) % 16, (pid >> 6) % 256);
        let c = (pid % 64) * 4;
        let outer_addr = format!("10.{a}.{b}.{}", c + 1);
        let inner_addr = format!("10.{a}.{b}.{}", c + 2);
        // Dropped, and so removed, if any step below fails.
        let veth = Self {
            namespace: format!("switchyard-bench-{pid}"),
            outer: format!("syb{pid}o"),
            inner: format!("syb{pid}i"),
            child_addr: inner_addr
                .parse()
                .map_err(|e| format!("the namespace's address {inner_addr}: {e}"))?,
        };
        let (ns, outer, inner) = (
            veth.namespace.as_str(),
            veth.outer.as_str(),
            veth.inner.as_str(),
        );
        ip(&["netns", "add", ns])?;
        ip(&["link", "add", outer, "type", "veth", "peer", "name", inner])?;
        ip(&["link", "set", inner, "netns", ns])?;
        ip(&["addr", "add", &format!("{outer_addr}/30"), "dev", outer])?;
        ip(&["link", "set", outer, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{inner_addr}/30"),
            "dev",
            inner,
        ])?;
        ip(&["-n", ns, "link", "set", inner, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(veth)
    }

    /// The namespace's name.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// This side's end of the pair.
    pub(crate) fn outer(&self) -> &str {
        &self.outer
    }

    /// The children's address, in the namespace.
    pub(crate) fn child_addr(&self) -> std::net::Ipv4Addr {
        self.child_addr
    }

    /// This binary as a child in `role`, run inside the namespace.
    pub(crate) fn command(&self, role: &str) -> Result<Command, String> {
        let exe = std::env::current_exe().map_err(|err| format!("finding this binary: {err}"))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .arg(exe)
            .env(CHILD_ENV, role);
        Ok(command)
    }

    /// Bytes this side's end has sent and received so far, as the kernel
    /// counts them (`/sys/class/net/<if>/statistics`: whole packets,
    /// Ethernet, IP and TCP/UDP headers included).
    pub(crate) fn bytes(&self) -> Result<u64, String> {
        let mut total = 0;
        for counter in ["tx_bytes", "rx_bytes"] {
            let path = format!("/sys/class/net/{}/statistics/{counter}", self.outer);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            total += text
                .trim()
                .parse::<u64>()
                .map_err(|e| format!("{path}: {text:?}: {e}"))?;
        }
        Ok(total)
    }

    /// Limits both ends to `rate` (a tc rate, e.g. `1gbit`) each way: netem
    /// where the kernel has it, else a token bucket (tbf). Returns what was
    /// set, for the table's notes.
    pub(crate) fn shape(&self, rate: &str) -> Result<String, String> {
        let ends = [
            (None, self.outer.as_str()),
            (Some(self.namespace.as_str()), self.inner.as_str()),
        ];
        let tc = |ns: Option<&str>, args: &[&str]| {
            let mut all = Vec::new();
            if let Some(ns) = ns {
                all.extend(["-n", ns]);
            }
            all.extend_from_slice(args);
            run("tc", &all)
        };
        let netem = ["netem", "rate", rate];
        // The bucket holds one 64 KiB GSO packet with its headers, the
        // smallest that does not make tbf cut GSO packets into segments
        // and wait for each: on a 2-vCPU VM, where every timer wake costs
        // tens of µs, a 16 KiB bucket made the shaper the bottleneck (tcp
        // fell to a third of the rate at four times the CPU per call). The
        // price: a packet that finds the bucket full passes at once, so one
        // call at a time is not held for its serialization time as on a
        // real link; the rate binds with calls in flight. Packets wait up
        // to 50 ms in the queue.
        let tbf = ["tbf", "rate", rate, "burst", "68kb", "latency", "50ms"];
        let mut used = "";
        for (ns, dev) in ends {
            let add = |qdisc: &[&str]| {
                let mut args = vec!["qdisc", "replace", "dev", dev, "root"];
                args.extend_from_slice(qdisc);
                tc(ns, &args)
            };
            used = match add(&netem) {
                Ok(()) => "netem",
                Err(netem_err) => match add(&tbf) {
                    Ok(()) => "tbf",
                    Err(tbf_err) => {
                        return Err(format!("shaping {dev}: {netem_err}; and then {tbf_err}"));
                    }
                },
            };
        }
        Ok(match used {
            "netem" => format!("tc qdisc netem rate {rate} on both ends of the veth"),
            _ => format!(
                "tc qdisc tbf rate {rate} burst 68kb latency 50ms on both ends of the veth \
                 (this kernel has no netem); a token bucket lets a 64 KiB packet through at \
                 once when it is full, so it limits the rate with calls in flight but holds a \
                 lone call for less than the serialization time of a real link"
            ),
        })
    }

    /// Packets the shapers of both ends dropped so far (`tc -s`), if they
    /// say.
    pub(crate) fn shaper_drops(&self) -> Option<u64> {
        let mut total = 0;
        for (ns, dev) in [
            (None, self.outer.as_str()),
            (Some(self.namespace.as_str()), self.inner.as_str()),
        ] {
            let mut command = Command::new("tc");
            if let Some(ns) = ns {
                command.args(["-n", ns]);
            }
            let out = command
                .args(["-s", "qdisc", "show", "dev", dev])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            // "Sent 123 bytes 4 pkt (dropped 0, overlimits 5 requeues 0)"
            let after = text.split("(dropped ").nth(1)?;
            total += after.split(',').next()?.trim().parse::<u64>().ok()?;
        }
        Some(total)
    }

    /// Removes what [`shape`](Self::shape) set.
    pub(crate) fn unshape(&self) -> Result<(), String> {
        run("tc", &["qdisc", "del", "dev", &self.outer, "root"])?;
        run(
            "tc",
            &[
                "-n",
                &self.namespace,
                "qdisc",
                "del",
                "dev",
                &self.inner,
                "root",
            ],
        )
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Removing the namespace removes the inner end, and with it the pair.
        let _ = ip(&["link", "del", &self.outer]);
        let _ = ip(&["netns", "del", &self.namespace]);
    }
}

/// Runs `ip ARGS`; its error output on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// Runs `program ARGS` (from iproute2); its error output on failure.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("running {program} (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
