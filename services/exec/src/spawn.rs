//! Spawning one run of a DT process: its own process group (and cgroup, when the
//! node has them: `cgroup/`), the contract's environment (and nothing of exec's
//! own, which may hold secrets), rlimits, an unprivileged user, and death with its
//! node.
//!
//! The workspace forbids `unsafe`, so nothing runs between fork and exec in Rust.
//! Limits are set by `/bin/sh` (`ulimit -v` for memory as address space, `ulimit -t`
//! for CPU seconds) right before it `exec`s the program, and `setpriv --pdeathsig KILL`
//! (util-linux, when installed) makes the process die with the exec node, so a node
//! that is killed leaves no orphan running while lifecycle starts its replacement
//! elsewhere. Both `exec`, so the pid exec knows is the program's. In a cgroup, the
//! shell first waits until exec has moved it into all of them.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use dtaas_schemas::exec::ProcessSpec;

use crate::cgroup::Group;

/// The user DT processes run as, when exec runs as root.
#[derive(Debug, Clone, Copy)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `name` when exec runs as root and the user exists; otherwise nobody to switch to.
    pub fn resolve(name: &str) -> Option<Self> {
        if name.is_empty() || !nix::unistd::geteuid().is_root() {
            return None;
        }
        match nix::unistd::User::from_name(name) {
            Ok(Some(user)) => Some(Self {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }),
            _ => {
                tracing::warn!(user = name, "DT processes run as root: the user to run them as does not exist. Create it or set DTAAS_EXEC_RUN_AS.");
                None
            }
        }
    }
}

/// What a run needs beyond its spec.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub spec: &'a ProcessSpec,
    /// The work directory holding the asset's files; the process's cwd.
    pub workdir: &'a Path,
    /// Variables exec sets: `DTAAS_NATS_URL` (unless the spec has it), `DTAAS_DT`,
    /// `DTAAS_ROLE`, `DTAAS_WORKDIR`, `DTAAS_STATE`.
    pub contract: BTreeMap<String, String>,
    pub run_as: Option<RunAs>,
    /// The run's cgroup, when the node has them: the run is moved into it at once.
    pub group: Option<&'a Group>,
}

fn setpriv() -> Option<&'static PathBuf> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .as_ref()
}

/// The program: relative to the asset's files when it names one of them, else looked
/// up in `PATH`.
fn program(argv0: &str, workdir: &Path) -> String {
    let local = workdir.join(argv0);
    if !argv0.starts_with('/') && local.is_file() {
        local.display().to_string()
    } else {
        argv0.to_owned()
    }
}

/// Shell that waits (builtins only, then 10 ms sleeps, up to 30 s) until exec moved
/// it into its cgroups: `proc_line` is the line of the group exec writes it into last,
/// so the program and all it forks start inside every one.
fn wait_for_group(proc_line: &str) -> String {
    let quoted = format!("'{}'", proc_line.replace('\'', "'\\''"));
    format!(
        "in_group() {{ while read -r l; do [ \"$l\" = {quoted} ] && return 0; done < /proc/self/cgroup; return 1; }}; \
         n=0; until in_group; do n=$((n+1)); \
         [ $n -gt 3000 ] && {{ echo 'dtaas: the process was not moved into its cgroup' >&2; exit 125; }}; \
         sleep 0.01; done"
    )
}

/// The whole command line: `sh -c 'ulimit …; exec "$@"'`, `setpriv`, then the program.
fn command_line(launch: &Launch<'_>) -> Vec<String> {
    let spec = launch.spec;
    let mut argv = Vec::new();
    let mut limits = Vec::new();
    if let Some(group) = launch.group {
        limits.push(wait_for_group(&group.proc_line));
    }
    if let (Some(mb), false) = (
        spec.memory_mb,
        launch.group.is_some_and(|g| g.memory_limit.is_some()),
    ) {
        limits.push(format!("ulimit -v {}", mb.saturating_mul(1024)));
    }
    if let Some(seconds) = spec.cpu_seconds_max {
        limits.push(format!("ulimit -t {seconds}"));
    }
    if !limits.is_empty() {
        argv.extend([
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!("{} && exec \"$@\"", limits.join(" && ")),
            "dtaas-limits".to_owned(),
        ]);
    }
    if let Some(setpriv) = setpriv() {
        argv.extend([
            setpriv.display().to_string(),
            "--pdeathsig".to_owned(),
            "KILL".to_owned(),
            "--".to_owned(),
        ]);
    }
    argv.push(program(&spec.argv[0], launch.workdir));
    argv.extend(spec.argv[1..].iter().cloned());
    argv
}

/// Starts one run. The child is the leader of its own process group (pgid = pid).
pub fn spawn(launch: &Launch<'_>) -> std::io::Result<Child> {
    let argv = command_line(launch);
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(launch.workdir)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("LANG", "C.UTF-8")
        .env("HOME", launch.workdir)
        .envs(&launch.spec.env)
        .envs(&launch.contract)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(run_as) = launch.run_as {
        // std drops the supplementary groups too when it changes the user.
        command.uid(run_as.uid).gid(run_as.gid);
    }
    let mut child = crate::orphans::spawn_leader(|| command.spawn())?;
    if let Some(group) = launch.group {
        if let Err(error) = group.adopt(child.id()) {
            // A hierarchy that lets exec make groups but not move processes into them:
            // the run goes on as a process group with rlimits rather than not at all.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = crate::orphans::reap_leader(&mut child);
            tracing::warn!(%error, dt = %launch.spec.dt, role = %launch.spec.role, "Cannot move a run into its cgroup; it runs without one (process group and rlimits).");
            return spawn(&Launch {
                group: None,
                ..launch.clone()
            });
        }
    }
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_wrap_the_program() {
        let spec = ProcessSpec {
            dt: "d".into(),
            role: "r".into(),
            owner: "alice".into(),
            asset: "alice/a@1".into(),
            digest: None,
            argv: vec!["sleep".into(), "1".into()],
            env: BTreeMap::new(),
            restart: Default::default(),
            cpu: None,
            memory_mb: Some(64),
            cpu_seconds_max: Some(5),
            state: None,
        };
        let launch = Launch {
            spec: &spec,
            workdir: Path::new("/tmp"),
            contract: BTreeMap::new(),
            run_as: None,
            group: None,
        };
        let argv = command_line(&launch);
        assert_eq!(argv[0], "/bin/sh");
        assert_eq!(argv[2], "ulimit -v 65536 && ulimit -t 5 && exec \"$@\"");
        assert_eq!(argv[argv.len() - 2..], ["sleep", "1"]);
        // In a cgroup that limits memory, the shell first waits to be moved into it,
        // and no address-space rlimit is set.
        let group = Group::without_dirs("0::/a/it's", Some(crate::cgroup::Version::V1));
        let launch = Launch {
            group: Some(&group),
            ..launch
        };
        let argv = command_line(&launch);
        assert!(argv[2].contains("= '0::/a/it'\\''s' ]"), "{}", argv[2]);
        assert!(
            argv[2].ends_with("done && ulimit -t 5 && exec \"$@\""),
            "{}",
            argv[2]
        );
    }
}
