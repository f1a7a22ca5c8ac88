//! External tools a test starts (Prometheus, Alertmanager): a scratch directory for their
//! files and logs, and a spawner that says how to install a tool that is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ChildGuard;

/// A scratch directory, removed on drop unless the test panicked (its logs are kept to read).
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// `<tmp>/<prefix>-<pid>`, emptied first.
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Starts `program` in `dir` with stdout and stderr to `<dir>/<name>.log`; panics with
/// `install_hint` when it cannot be started.
pub fn spawn_tool(
    dir: &Path,
    name: &str,
    program: &str,
    args: &[String],
    install_hint: &str,
) -> ChildGuard {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{program}` ({e}): {install_hint}"));
    ChildGuard(child)
}
