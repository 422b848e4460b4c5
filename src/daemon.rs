//! Running the mount: fork into the background and report readiness over a pipe (the
//! command returns only once the mount is live), signals turned into a clean unmount,
//! logging set-up, and the fuser session.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, SessionACL};

use crate::fuse_adapter::{AdapterConfig, StrataFs};
use crate::idmap::{self, IdMap, IdMaps};
use crate::layers::LayerSet;
use crate::layertool::initlayer::InitLayer;
use crate::logging;
use crate::options::MountOptions;
use crate::options::Passthrough;
use crate::sys;
use crate::union::{Behaviour, Union};

pub struct MountRequest {
    pub opts: MountOptions,
    pub mountpoint: PathBuf,
    pub source: Option<String>,
    pub foreground: bool,
}

/// Whether other users may use the mount: asked for, or a mount by root (which, as with
/// fuse-overlayfs and kernel overlayfs, serves every user, with the kernel checking
/// permissions) unless `noallow_other`.
fn shared_with_all(o: &MountOptions) -> bool {
    o.allow_other || (sys::getuid() == 0 && !o.no_allow_other)
}

fn fuse_config(req: &MountRequest) -> Config {
    let o = &req.opts;
    let mut cfg = Config::default();
    cfg.acl = if shared_with_all(o) {
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

/// Who made the mount, and so who can end it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MountedBy {
    /// mount(2): root, or a user namespace's root on its own mount namespace.
    Kernel,
    /// fusermount3, for a plain user (mount(2) answered EPERM).
    Helper,
}

/// Mounts `fuse.stratafs` at the mountpoint with a /dev/fuse fd of our own. The daemon
/// owns the mount (not fuser), so it never unmounts by path after an external umount,
/// when the path may already hold somebody else's new mount.
fn kernel_mount(req: &MountRequest) -> Result<(OwnedFd, MountedBy), String> {
    let o = &req.opts;
    let in_mountpoint = |e: sys::Errno| format!("mountpoint '{}': {e}", req.mountpoint.display());
    let source = o
        .fsname
        .clone()
        .or_else(|| req.source.clone())
        .unwrap_or_else(|| "stratafs".into());
    let root_kind = std::fs::metadata(&req.mountpoint)
        .map(|m| m.mode() & libc::S_IFMT)
        .map_err(|e| in_mountpoint(sys::Errno::from(e)))?;
    let mut flags = o.mount_flags;
    if o.read_only || o.upperdir.is_none() {
        flags |= libc::MS_RDONLY;
    }
    let mut fuse_options = Vec::new();
    if shared_with_all(o) {
        fuse_options.push("allow_other");
    }
    if o.default_permissions || shared_with_all(o) {
        fuse_options.push("default_permissions");
    }
    let direct = sys::fuse_mount(&source, &req.mountpoint, "fuse.stratafs", flags, |fd| {
        let mut data = format!(
            "fd={fd},rootmode={root_kind:o},user_id={},group_id={}",
            sys::getuid(),
            sys::getgid()
        );
        for opt in &fuse_options {
            data.push(',');
            data.push_str(opt);
        }
        data
    });
    match direct {
        Ok(fd) => Ok((fd, MountedBy::Kernel)),
        // EACCES: /dev/fuse itself is closed to users (mode 0600), which the setuid
        // helper can still open.
        Err(sys::Errno::EPERM | sys::Errno::EACCES) if sys::getuid() != 0 => {
            let options = crate::fusermount::option_string(&source, flags, &fuse_options);
            crate::fusermount::mount(&req.mountpoint, &options)
                .map(|fd| (fd, MountedBy::Helper))
                .map_err(|e| format!("mountpoint '{}': {e}", req.mountpoint.display()))
        }
        Err(e) => Err(in_mountpoint(e)),
    }
}

/// Ends the mount the way it was made; `lazy` detaches a busy one at once.
fn unmount(mnt: &std::path::Path, by: MountedBy, lazy: bool) -> Result<(), String> {
    match by {
        MountedBy::Helper => crate::fusermount::unmount(mnt),
        MountedBy::Kernel if lazy => sys::umount_detach(mnt).map_err(|e| e.to_string()),
        MountedBy::Kernel => sys::umount(mnt).map_err(|e| e.to_string()),
    }
}

/// `-o hostname=...` and friends without `initdir=`: writes an init layer into the
/// workdir (S18) and mounts it as the initdir.
fn generate_init_layer(opts: &mut MountOptions) -> Result<(), String> {
    if opts.init.is_empty() || opts.initdir.is_some() {
        return Ok(());
    }
    let work = opts.workdir.clone().ok_or_else(|| {
        "option 'hostname': the init layer is generated in the workdir, which is missing"
            .to_string()
    })?;
    let spec = InitLayer::from_flags(
        opts.init.hostname.as_deref(),
        &opts.init.add_hosts,
        &opts.init.dns,
        &opts.init.dns_search,
    )
    .map_err(|e| e.0)?;
    let dir = work.join(crate::layers::GENERATED_INIT_SUBDIR);
    spec.write(&dir).map_err(|e| e.0)?;
    opts.initdir = Some(dir);
    Ok(())
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

/// `-o remount,...`: changes ro/rw and the generic mount flags of a live stratafs mount
/// (the layers of a live mount cannot change; layer options given again are ignored).
fn remount(req: &MountRequest) -> i32 {
    let fail = |e: String| {
        eprintln!("stratafs: {e}");
        1
    };
    let mnt = match std::fs::canonicalize(&req.mountpoint) {
        Ok(m) => m,
        Err(e) => {
            return fail(format!(
                "mountpoint '{}': {}",
                req.mountpoint.display(),
                sys::Errno::from(e)
            ))
        }
    };
    if crate::layers::mount_type(&mnt).as_deref() != Some("fuse.stratafs") {
        return fail(format!(
            "mountpoint '{}': remount: not a stratafs mount",
            req.mountpoint.display()
        ));
    }
    let mut flags = req.opts.mount_flags;
    if req.opts.read_only {
        flags |= libc::MS_RDONLY;
    }
    match sys::remount(&mnt, flags) {
        Ok(()) => 0,
        Err(e) => fail(format!("mountpoint '{}': remount: {e}", mnt.display())),
    }
}

/// Mounts and serves until unmounted. Returns the process exit status.
pub fn run(mut req: MountRequest) -> i32 {
    if req.opts.remount {
        return remount(&req);
    }
    // The namespace of stratafs' own xattrs: the one the upper was written with, if its
    // workdir says (a trusted.* upper cannot be read by a mount that is not the host's
    // root); else user.* unless this daemon may write trusted.* (S8).
    let may_trusted = sys::may_write_trusted_xattrs();
    let user_ns =
        match crate::layers::recorded_xattr_namespace(&req.opts) {
            Some(false) if !may_trusted => {
                eprintln!(
                "stratafs: workdir '{}': this upper keeps stratafs' private xattrs as trusted.* \
                 (it was written by a mount of the host's root), which this mount cannot read: \
                 mount it as root",
                req.opts.workdir.as_deref().unwrap_or(Path::new("")).display()
            );
                return 1;
            }
            Some(recorded) => recorded,
            None => req.opts.userxattr || !may_trusted,
        };
    crate::private_xattrs::use_user_namespace(user_ns);
    if let Err(e) = generate_init_layer(&mut req.opts) {
        eprintln!("stratafs: {e}");
        return 1;
    }
    // Validate everything we can before forking and before touching any dir, so errors
    // reach the caller directly and a refused mount changes nothing.
    if let Err(e) = LayerSet::open_checked(&req.opts, &req.mountpoint) {
        eprintln!("stratafs: {e}");
        return 1;
    }
    // fusermount3 too opens /dev/fuse as the user.
    if let Err(e) = sys::check_rw("/dev/fuse") {
        eprintln!("stratafs: /dev/fuse: {e}");
        return 1;
    }
    // fusermount3's rules, for those who will mount through it (mount(2) needs
    // CAP_SYS_ADMIN, which root has, or a service may be given).
    let may_mount =
        sys::getuid() == 0 || sys::process_has_capability(std::process::id(), sys::CAP_SYS_ADMIN);
    if !may_mount {
        if let Err(e) = crate::fusermount::precheck(&req.mountpoint, shared_with_all(&req.opts)) {
            eprintln!("stratafs: mountpoint '{}': {e}", req.mountpoint.display());
            return 1;
        }
    }
    let layers = match LayerSet::open(&req.opts, &req.mountpoint) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("stratafs: {e}");
            return 1;
        }
    };
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

/// What the union does differently under the mount options.
fn behaviour(o: &MountOptions) -> Behaviour {
    Behaviour {
        volatile: o.volatile,
        no_sync: !o.fsync,
        metacopy: o.metacopy,
        redirect_dir: o.redirect_dir,
        acls: o.acls(),
        static_nlink: o.static_nlink,
        xattr_permissions: o.xattr_permissions,
        noatime: o.mount_flags & libc::MS_NOATIME != 0,
        // A plain user's mount is always nodev (fusermount3 makes it so).
        nodev: o.mount_flags & libc::MS_NODEV != 0 || sys::getuid() != 0,
    }
}

/// What the FUSE adapter does under the mount options.
fn adapter_config(o: &MountOptions) -> AdapterConfig {
    AdapterConfig {
        // -o timeout= sets both; by default names, misses and attributes live an hour:
        // every change goes through this mount, which the kernel sees, or is one the union
        // tells the kernel about (and files open for writing never have their attributes
        // cached).
        ttl: Duration::from_secs_f64(o.timeout_secs.unwrap_or(3600.0)),
        passthrough: o.passthrough != Passthrough::Off,
        passthrough_lower: o.passthrough == Passthrough::All,
        acls: o.acls(),
        squash_uid: o.squash_uid,
        squash_gid: o.squash_gid,
        // One mapping for the daemon's whole life, which every request's caller refers to.
        ids: Box::leak(Box::new(IdMaps {
            uids: IdMap::new(o.uid_ranges.clone(), idmap::kernel_overflow_id(false)),
            gids: IdMap::new(o.gid_ranges.clone(), idmap::kernel_overflow_id(true)),
        })),
        ino32: o.ino32,
        xattrs: o.xattrs,
    }
}

/// A thread that waits for SIGTERM, SIGINT or SIGHUP and unmounts, which ends the session.
fn unmount_on_signal(signals: sys::SignalWaiter, mnt: PathBuf, mounted_by: MountedBy) {
    std::thread::spawn(move || {
        let sig = signals.wait();
        tracing::info!("signal {sig}: unmounting");
        if let Err(e) = unmount(&mnt, mounted_by, false) {
            tracing::error!("unmount of '{}' failed: {e}", mnt.display());
        }
    });
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
    if crate::private_xattrs::in_user_namespace() {
        tracing::info!("private xattrs are user.stratafs.* (not a mount by the host's root)");
    }
    if let Some(c) = &req.opts.context {
        tracing::warn!("context={c} accepted and ignored: labels come from the layers");
    }
    sys::raise_nofile();
    let union = match Union::new(layers, behaviour(&req.opts)) {
        Ok(u) => Arc::new(u),
        Err(e) => {
            report(&format!("cannot read the layers: {e}"));
            return 1;
        }
    };
    let cfg = fuse_config(&req);
    // Block termination signals before any thread exists, so one thread can sigwait them.
    let signals = sys::SignalWaiter::block_termination();
    let union_handle = union.clone();
    let (dev, mounted_by) = match kernel_mount(&req) {
        Ok(m) => m,
        Err(e) => {
            report(&e);
            return 1;
        }
    };
    let acl = cfg.acl;
    let adapter = StrataFs::new(union, adapter_config(&req.opts));
    let session = match fuser::Session::from_fd(adapter, dev, acl, cfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = unmount(&req.mountpoint, mounted_by, true);
            report(&format!(
                "mountpoint '{}': {}",
                req.mountpoint.display(),
                sys::Errno::from(e)
            ));
            return 1;
        }
    };
    union_handle.set_kernel_cache(Box::new(crate::fuse_adapter::NotifyCache::new(
        session.notifier(),
    )));
    if let Err(e) = union_handle.mark_volatile() {
        drop(session);
        let _ = unmount(&req.mountpoint, mounted_by, true);
        report(&format!("workdir: cannot write the volatile marker: {e}"));
        return 1;
    }
    report("ok");
    drop(ready);
    if !req.foreground {
        sys::redirect_stdio_to_null();
    }
    unmount_on_signal(signals, req.mountpoint.clone(), mounted_by);
    // A lazily detached mount (unmounted while files were open) ends with the kernel
    // aborting the connection once the last file closes: a clean stop too.
    let run = match session.run() {
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
        r => r,
    };
    match run {
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
