//! Running the mount: fork into the background and report readiness over a pipe (the
//! command returns only once the mount is live), signals turned into a clean unmount,
//! logging set-up, and the fuser session.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use crate::fuse_adapter::StrataFs;
use crate::layers::LayerSet;
use crate::logging;
use crate::options::MountOptions;
use crate::sys;
use crate::union::Union;

pub struct MountRequest {
    pub opts: MountOptions,
    pub mountpoint: PathBuf,
    pub source: Option<String>,
    pub foreground: bool,
}

fn fuse_config(req: &MountRequest) -> Config {
    let o = &req.opts;
    let fsname = o
        .fsname
        .clone()
        .or_else(|| req.source.clone())
        .unwrap_or_else(|| "stratafs".into());
    let mut mount_options = vec![
        MountOption::FSName(fsname),
        MountOption::CUSTOM("subtype=stratafs".into()),
        MountOption::Dev,
        MountOption::Suid,
    ];
    if o.read_only || o.upperdir.is_none() {
        mount_options.push(MountOption::RO);
    } else {
        mount_options.push(MountOption::RW);
    }
    if o.default_permissions || o.allow_other {
        mount_options.push(MountOption::DefaultPermissions);
    }
    let mut cfg = Config::default();
    cfg.mount_options = mount_options;
    cfg.acl = if o.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    cfg.n_threads = Some(o.threads.unwrap_or(cores.clamp(1, 4)));
    cfg
}

/// Checks a mount request against the disk without mounting (mount -f). Exit status.
pub fn check(req: &MountRequest) -> i32 {
    match LayerSet::open_checked(&req.opts, &req.mountpoint) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stratafs: {e}");
            1
        }
    }
}

/// Mounts and serves until unmounted. Returns the process exit status.
pub fn run(req: MountRequest) -> i32 {
    // Validate everything we can before forking, so errors reach the caller directly.
    let layers = match LayerSet::open(&req.opts, &req.mountpoint) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("stratafs: {e}");
            return 1;
        }
    };
    if !Path::new("/dev/fuse").exists() {
        eprintln!("stratafs: /dev/fuse: No such file or directory");
        return 1;
    }
    if req.foreground {
        logging::init(req.opts.debug, false, None);
        return serve(req, layers, None);
    }
    let (rd, wr) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("stratafs: pipe: {e}");
            return 1;
        }
    };
    match sys::fork() {
        Err(e) => {
            eprintln!("stratafs: fork: {e}");
            1
        }
        Ok(sys::Fork::Parent) => {
            drop(wr);
            let msg = sys::read_to_end(rd.as_fd());
            let msg = String::from_utf8_lossy(&msg);
            if msg == "ok" {
                0
            } else {
                let m = msg.trim();
                eprintln!(
                    "stratafs: {}",
                    if m.is_empty() {
                        "daemon exited before the mount was live"
                    } else {
                        m
                    }
                );
                1
            }
        }
        Ok(sys::Fork::Child) => {
            drop(rd);
            sys::setsid();
            logging::init(req.opts.debug, true, req.opts.logfile.as_deref());
            serve(req, layers, Some(wr))
        }
    }
}

fn serve(req: MountRequest, layers: LayerSet, ready: Option<std::os::fd::OwnedFd>) -> i32 {
    let report = |msg: &str| {
        if let Some(w) = &ready {
            sys::write_all(w.as_fd(), msg.as_bytes());
        } else if msg != "ok" {
            eprintln!("stratafs: {msg}");
        }
    };
    sys::umask(0);
    for l in &layers.layers {
        tracing::info!("layer {:?}: {}", l.role, l.path.display());
    }
    if let Some(c) = &req.opts.context {
        tracing::warn!("context={c} accepted and ignored: labels come from the layers");
    }
    sys::raise_nofile();
    let union = match Union::new(layers, req.opts.volatile) {
        Ok(u) => Arc::new(u),
        Err(e) => {
            report(&format!("cannot read the layers: {e}"));
            return 1;
        }
    };
    let ttl = Duration::from_secs_f64(req.opts.timeout_secs.unwrap_or(1.0));
    let cfg = fuse_config(&req);
    // Block termination signals before any thread exists, so one thread can sigwait them.
    let signals = sys::SignalWaiter::block_termination();
    let union_handle = union.clone();
    let mut session = match fuser::Session::new(
        StrataFs::new(union, ttl, req.opts.passthrough),
        &req.mountpoint,
        &cfg,
    ) {
        Ok(s) => s,
        Err(e) => {
            report(&format!(
                "mountpoint '{}': {}",
                req.mountpoint.display(),
                sys::Errno::from(e)
            ));
            return 1;
        }
    };
    report("ok");
    drop(ready);
    if !req.foreground {
        sys::redirect_stdio_to_null();
    }
    let mut unmounter = session.unmount_callable();
    let mnt = req.mountpoint.clone();
    std::thread::spawn(move || {
        let sig = signals.wait();
        tracing::info!("signal {sig}: unmounting");
        if unmounter.unmount().is_err() {
            let _ = sys::umount_detach(&mnt);
        }
    });
    match session.run() {
        Ok(()) => {
            // A clean stop: a volatile upper is synced and no longer suspect.
            union_handle.finish_clean();
            0
        }
        Err(e) => {
            tracing::error!("session ended: {e}");
            1
        }
    }
}
