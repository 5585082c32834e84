//! The operating-system side of the throwaway PostgreSQL: running commands as the server's
//! OS user (Postgres refuses root), finding its binaries, and quoting for shells,
//! connection strings, config files and SQL.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The OS user the server runs as when the tests run as root.
pub(crate) const SERVER_OS_USER: &str = "postgres";

/// A command that runs `argv` as the server OS user: directly unless we are root.
pub(crate) fn server_user_command(argv: &[&str]) -> Command {
    if !running_as_root() {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        return cmd;
    }
    if let Some(runuser) = find_program("runuser") {
        let mut cmd = Command::new(runuser);
        cmd.args(["-u", SERVER_OS_USER, "--"]).args(argv);
        cmd
    } else {
        let line = argv
            .iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(find_program("su").unwrap_or_else(|| PathBuf::from("su")));
        cmd.args([SERVER_OS_USER, "-s", "/bin/sh", "-c", &line]);
        cmd
    }
}

/// Whether this process runs as root (`id -u` prints 0).
pub(crate) fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let out = Command::new("id")
            .arg("-u")
            .output()
            .expect("cannot run `id -u` to tell whether we are root");
        String::from_utf8_lossy(&out.stdout).trim() == "0"
    })
}

/// Uid and gid of the server OS user.
pub(crate) fn server_user_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, SERVER_OS_USER])
            .output()
            .map_err(|e| format!("cannot run `id {flag} {SERVER_OS_USER}`: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                format!(
                "running as root, but there is no `{SERVER_OS_USER}` OS user to run PostgreSQL as \
                 (PostgreSQL refuses to run as root; the postgresql packages create that user): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            })
    };
    Ok((id("-u")?, id("-g")?))
}

/// Finds the server binaries; see [`bindir()`].
pub(crate) fn find_bindir() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if usable(&dir) {
                return Some(dir);
            }
        }
    }
    let v15 = PathBuf::from("/usr/lib/postgresql/15/bin");
    if usable(&v15) {
        return Some(v15);
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e
                .file_name()
                .to_str()?
                .split('.')
                .next()?
                .parse::<u32>()
                .ok()?;
            let dir = e.path().join("bin");
            usable(&dir).then_some((version, dir))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, dir)| dir)
}

/// Looks `name` up in `PATH` and the usual system directories.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The path as UTF-8, which the temporary paths always are.
pub(crate) fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("path {} is not UTF-8", p.display()))
}

/// Quotes for POSIX sh.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Quotes a value for a libpq / tokio-postgres key=value connection string.
pub(crate) fn conn_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', r"\\").replace('\'', r"\'"))
}

/// Quotes a string value for postgresql.conf.
pub(crate) fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', r"\\").replace('\'', "''"))
}

/// Quotes a SQL string literal (standard_conforming_strings is on).
pub(crate) fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
