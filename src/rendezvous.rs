//! How container-runs are found without a name the job's user can hide
//! (SPEC section 3, "Who is believed"): besides the socket in
//! `BASE/data/JOB`, every container-run binds a socket in the abstract
//! namespace, which the containers of a pod share with their network
//! namespace. No file permission can rename, replace or hide such a name,
//! and it vanishes with the process that holds it: a name that is listed
//! belongs to a live process, one that is gone is gone.
//!
//! A name is `container-run/POD/TARGET/NONCE`: POD is a hash of the device
//! and inode of `BASE/data` (what makes a pod a pod in SPEC section 8, and
//! distinct for pods that share a node's network namespace with
//! `hostNetwork`); TARGET a hash of JOB and PROCESS; NONCE random, so that
//! nobody can take a container-run's name before it binds. Anyone can bind
//! a name that looks like one: a name is only where to ask, never who
//! answers. Whoever reads a listing believes only answers whose sender's
//! credentials it trusts (`datagram::Trust`).
//!
//! The kernel also says who owns each name's socket (sock_diag,
//! `UDIAG_SHOW_UID`, Linux 5.3): `Pod::list_believed` leaves out the names
//! of owners a reader does not believe before anything is counted or
//! asked, so that look-alike names of the job's user cost a reader neither
//! time nor fds, cannot crowd the real ones out of a bounded listing, and
//! keep no departed peer "bound". Where sock_diag is refused, names come
//! from `/proc/net/unix` without owners, and only credentials decide.

use std::io::{self, BufRead};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::datagram::Trust;

/// The first component of every name.
const PREFIX: &str = "container-run/";

/// Where the kernel lists the unix sockets of the reader's network
/// namespace, abstract names with a leading `@`.
const LISTING: &str = "/proc/net/unix";

/// Names kept from one listing: a job user binding millions of look-alike
/// names costs the reader this much at most.
pub const MAX_LISTED: usize = 4096;

/// 64-bit FNV-1a: stable across builds and machines (std's hasher is not
/// promised to be), and all a name needs: no secret is hashed.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The pod of `BASE`: `BASE/data`'s device and inode, hashed. The link is
/// not followed: a `data` that is a link is no pod's data volume.
pub fn pod_of(base: &Path) -> io::Result<Pod> {
    let data = base.join("data");
    let meta = std::fs::symlink_metadata(&data)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            data.display()
        )));
    }
    let id = format!("{}:{}", meta.dev(), meta.ino());
    Ok(Pod(format!("{PREFIX}{:016x}/", fnv(id.as_bytes()))))
}

/// One pod's part of the abstract namespace: `container-run/POD/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod(String);

impl Pod {
    /// Where the container-run of JOB/PROCESS binds: `…/TARGET/` plus a
    /// nonce (see `name_for`).
    pub fn prefix_for(&self, job: &str, process: &str) -> String {
        let key = [job.as_bytes(), b"\0", process.as_bytes()].concat();
        format!("{}{:016x}/", self.0, fnv(&key))
    }

    /// A fresh name for JOB/PROCESS, 64 random bits as its nonce.
    pub fn name_for(&self, job: &str, process: &str, nonce: &str) -> Vec<u8> {
        format!("{}{nonce}", self.prefix_for(job, process)).into_bytes()
    }

    /// Every name of the pod now bound, in the order listed.
    pub fn list(&self) -> io::Result<Listing> {
        list(self.0.as_bytes(), None)
    }

    /// The pod's names whose sockets belong to a uid `trust` believes, or
    /// to an owner the kernel does not tell.
    pub fn list_believed(&self, trust: &Trust) -> io::Result<Listing> {
        list(self.0.as_bytes(), Some(trust))
    }
}

/// The names bound under a prefix, and whether some were left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    pub names: Vec<Vec<u8>>,
    /// The uid owning each name's socket, in the order of `names`; `None`
    /// when the kernel does not tell.
    pub owners: Vec<Option<u32>>,
    /// Names left out because their owner is not believed: how many, and
    /// the owner of the first.
    pub strangers: usize,
    pub stranger_uid: Option<u32>,
    pub truncated: bool,
    /// The names taken, to drop repeats without a scan of `names`.
    seen: std::collections::HashSet<Vec<u8>>,
}

impl Listing {
    /// Take `name`, unless `trust` is given and does not believe its
    /// known owner, or the listing is full.
    fn add(&mut self, name: Vec<u8>, owner: Option<u32>, trust: Option<&Trust>) {
        if let (Some(trust), Some(uid)) = (trust, owner)
            && !trust.believes_uid(uid)
        {
            self.strangers += 1;
            self.stranger_uid.get_or_insert(uid);
            return;
        }
        if self.seen.contains(&name) {
            return;
        }
        if self.names.len() == MAX_LISTED {
            self.truncated = true;
            return;
        }
        self.seen.insert(name.clone());
        self.names.push(name);
        self.owners.push(owner);
    }

    /// Names under `prefix` (a `prefix_for`).
    pub fn under(&self, prefix: &str) -> Vec<Vec<u8>> {
        self.names
            .iter()
            .filter(|n| n.starts_with(prefix.as_bytes()))
            .cloned()
            .collect()
    }

    pub fn contains_prefix(&self, prefix: &str) -> bool {
        self.names.iter().any(|n| n.starts_with(prefix.as_bytes()))
    }
}

/// Names bound in this network namespace that start with `prefix`, with
/// their owners when sock_diag tells them.
pub fn list(prefix: &[u8], trust: Option<&Trust>) -> io::Result<Listing> {
    let mut listing = Listing::default();
    match diag::dump(prefix, &mut |name, owner| listing.add(name, owner, trust)) {
        Ok(complete) => {
            listing.truncated |= !complete;
            return Ok(listing);
        }
        Err(e) => log::debug!(
            "sock_diag: {}; listing {LISTING} without owners",
            crate::error::os_phrase(&e)
        ),
    }
    let mut listing = Listing::default();
    let file = std::fs::File::open(LISTING)?;
    parse(io::BufReader::new(file), prefix, &mut listing, trust)?;
    Ok(listing)
}

fn parse(
    mut input: impl BufRead,
    prefix: &[u8],
    listing: &mut Listing,
    trust: Option<&Trust>,
) -> io::Result<()> {
    let mut line = Vec::new();
    let needle = [b" @".as_slice(), prefix].concat();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        // The path is the last field; a name that is not ours may hold
        // spaces or a newline of its own, so look for ours anywhere: at
        // worst a planted name yields one more place to ask.
        let Some(at) = line.windows(needle.len()).position(|w| w == needle) else {
            continue;
        };
        let name: Vec<u8> = line[at + 2..]
            .iter()
            .copied()
            .take_while(|b| !b.is_ascii_whitespace())
            .collect();
        listing.add(name, None, trust);
    }
}

/// The kernel's own table of unix sockets, with owners: one
/// `SOCK_DIAG_BY_FAMILY` dump over a netlink socket.
mod diag {
    use std::io;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        setsockopt, socket, sockopt,
    };
    use nix::sys::time::TimeVal;

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const UDIAG_SHOW_NAME: u32 = 0x1;
    const UDIAG_SHOW_UID: u32 = 0x40;
    const UNIX_DIAG_NAME: u16 = 0;
    const UNIX_DIAG_UID: u16 = 7;
    /// `struct nlmsghdr`, then `struct unix_diag_msg`.
    const HEADER: usize = 16;
    const DIAG_MSG: usize = 16;
    /// Sockets read from one dump at most.
    const MAX_SOCKETS: usize = 1 << 20;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn aligned(len: usize) -> usize {
        len.div_ceil(4) * 4
    }

    /// `struct nlmsghdr` and `struct unix_diag_req`: every state, names
    /// and owners.
    fn request() -> Vec<u8> {
        let mut r = Vec::with_capacity(40);
        r.extend(40u32.to_ne_bytes());
        r.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        r.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        r.extend(1u32.to_ne_bytes());
        r.extend(0u32.to_ne_bytes());
        r.extend([libc::AF_UNIX as u8, 0, 0, 0]);
        r.extend(u32::MAX.to_ne_bytes());
        r.extend(0u32.to_ne_bytes());
        r.extend((UDIAG_SHOW_NAME | UDIAG_SHOW_UID).to_ne_bytes());
        r.extend([0xff; 8]);
        r
    }

    /// Call `each` with every abstract name under `prefix` and its
    /// owner; `Ok(false)` when the table was too long to read whole.
    pub fn dump(prefix: &[u8], each: &mut dyn FnMut(Vec<u8>, Option<u32>)) -> io::Result<bool> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(1, 0))?;
        sendto(
            fd.as_raw_fd(),
            &request(),
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut seen = 0;
        // Bounded: every turn reads at least one socket or ends.
        while seen < MAX_SOCKETS {
            let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            if walk(&buf[..n], prefix, each, &mut seen)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One datagram of the dump; `Ok(true)` at its end.
    fn walk(
        mut b: &[u8],
        prefix: &[u8],
        each: &mut dyn FnMut(Vec<u8>, Option<u32>),
        seen: &mut usize,
    ) -> io::Result<bool> {
        if b.is_empty() {
            return Err(io::Error::other("sock_diag ended without NLMSG_DONE"));
        }
        while b.len() >= HEADER {
            let len = u32_at(b, 0) as usize;
            if len < HEADER || len > b.len() {
                return Err(io::Error::other("malformed sock_diag message"));
            }
            match u16_at(b, 4) {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR if len >= HEADER + 4 => {
                    let code = u32_at(b, HEADER) as i32;
                    return Err(io::Error::from_raw_os_error(code.saturating_neg()));
                }
                _ => {
                    *seen += 1;
                    if let Some((name, owner)) = entry(&b[HEADER..len], prefix) {
                        each(name, owner);
                    }
                }
            }
            b = &b[aligned(len).min(b.len())..];
        }
        Ok(false)
    }

    /// The abstract name under `prefix` of one `unix_diag_msg`, and the
    /// uid owning its socket when the kernel says.
    fn entry(msg: &[u8], prefix: &[u8]) -> Option<(Vec<u8>, Option<u32>)> {
        let mut attrs = msg.get(DIAG_MSG..)?;
        let (mut name, mut owner) = (None, None);
        while attrs.len() >= 4 {
            let len = u16_at(attrs, 0) as usize;
            if len < 4 || len > attrs.len() {
                break;
            }
            let data = &attrs[4..len];
            match u16_at(attrs, 2) {
                UNIX_DIAG_NAME => {
                    name = data
                        .strip_prefix(b"\0")
                        .filter(|n| n.starts_with(prefix))
                        .map(<[u8]>::to_vec);
                }
                UNIX_DIAG_UID if data.len() >= 4 => owner = Some(u32_at(data, 0)),
                _ => {}
            }
            attrs = &attrs[aligned(len).min(attrs.len())..];
        }
        Some((name?, owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_distinct() {
        let pod = Pod("container-run/00000000000000aa/".into());
        assert_eq!(
            pod.prefix_for("web", "nginx"),
            pod.prefix_for("web", "nginx")
        );
        assert_ne!(
            pod.prefix_for("web", "nginx"),
            pod.prefix_for("webn", "ginx")
        );
        let name = pod.name_for("web", "nginx", "0123456789abcdef");
        assert!(name.starts_with(pod.prefix_for("web", "nginx").as_bytes()));
        assert!(name.len() <= 107, "{}", name.len());
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn the_kernel_tells_each_names_owner_and_strangers_are_left_out() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
        use std::os::fd::AsRawFd;
        let prefix = format!("container-run/unit-{}/", std::process::id());
        let name = format!("{prefix}t/n");
        let sock = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(
            sock.as_raw_fd(),
            &UnixAddr::new_abstract(name.as_bytes()).unwrap(),
        )
        .unwrap();
        let got = list(prefix.as_bytes(), Some(&Trust::new(None))).unwrap();
        assert_eq!(got.names, vec![name.into_bytes()]);
        let me = nix::unistd::geteuid().as_raw();
        assert!(got.owners == [Some(me)] || got.owners == [None], "{got:?}");
        let mut l = Listing::default();
        let other = if me == 4242 { 4243 } else { 4242 };
        l.add(b"a".to_vec(), Some(other), Some(&Trust::new(None)));
        l.add(b"b".to_vec(), Some(other), None);
        l.add(b"c".to_vec(), None, Some(&Trust::new(None)));
        assert_eq!(l.names, [b"b".to_vec(), b"c".to_vec()]);
        assert_eq!((l.strangers, l.stranger_uid), (1, Some(other)));
    }

    #[test]
    fn the_listing_keeps_our_names_once_and_bounds_the_rest() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 100 @container-run/p/t/1\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 101 /run/other.sock\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 102 @container-run/q/t/2\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 103 @container-run/p/t/1\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 104 @x @container-run/p/u/3\n";
        let mut got = Listing::default();
        parse(text.as_bytes(), b"container-run/p/", &mut got, None).unwrap();
        assert_eq!(
            got.names,
            vec![
                b"container-run/p/t/1".to_vec(),
                b"container-run/p/u/3".to_vec()
            ]
        );
        assert!(!got.truncated);
        assert_eq!(got.under("container-run/p/t/").len(), 1);
        let many: String = (0..MAX_LISTED + 5)
            .map(|i| format!("0: 2 0 0 0002 01 1 @container-run/p/t/{i}\n"))
            .collect();
        let mut got = Listing::default();
        parse(many.as_bytes(), b"container-run/p/", &mut got, None).unwrap();
        assert_eq!(got.names.len(), MAX_LISTED);
        assert!(got.truncated);
    }
}
