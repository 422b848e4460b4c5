//! Where the daemon's tracing output goes: stderr in the foreground; when detached, the
//! syslog socket (journald listens there too) if there is one, else `-o logfile=PATH`,
//! else nowhere. `-o debug` or RUST_LOG raise the level.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

const SYSLOG_SOCKET: &str = "/dev/log";

/// One syslog datagram per formatted event (RFC 3164 framing, facility daemon).
struct SyslogWriter {
    sock: Arc<UnixDatagram>,
    buf: Vec<u8>,
}

impl Write for SyslogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if !text.is_empty() {
            // <30> = facility daemon (3) * 8 + severity info (6).
            let msg = format!("<30>stratafs[{}]: {}", std::process::id(), text);
            let _ = self.sock.send(msg.as_bytes());
        }
    }
}

#[derive(Clone)]
struct Syslog(Arc<UnixDatagram>);

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogWriter;
    fn make_writer(&'a self) -> SyslogWriter {
        SyslogWriter {
            sock: self.0.clone(),
            buf: Vec::new(),
        }
    }
}

fn connect_syslog() -> Option<Syslog> {
    if !Path::new(SYSLOG_SOCKET).exists() {
        return None;
    }
    let s = UnixDatagram::unbound().ok()?;
    s.connect(SYSLOG_SOCKET).ok()?;
    Some(Syslog(Arc::new(s)))
}

fn filter(debug: bool) -> tracing_subscriber::EnvFilter {
    // fuser warns when the session's own unmount finds the mount already gone (after an
    // external umount): expected, so only its errors are shown.
    let level = if debug {
        "debug"
    } else {
        "warn,fuser::session=error"
    };
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level))
}

/// Sets up logging; `detached` means stderr is about to go to /dev/null.
pub fn init(debug: bool, detached: bool, logfile: Option<&Path>) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter(debug));
    if !detached {
        let _ = builder.with_writer(std::io::stderr).try_init();
        return;
    }
    if let Some(sys) = connect_syslog() {
        let _ = builder
            .without_time()
            .with_ansi(false)
            .with_writer(sys)
            .try_init();
        return;
    }
    if let Some(path) = logfile {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => {
                let _ = builder
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(f))
                    .try_init();
            }
            Err(e) => eprintln!("stratafs: logfile '{}': {e}", path.display()),
        }
    }
}
