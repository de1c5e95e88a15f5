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

use std::io::{self, BufRead};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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
        list(self.0.as_bytes())
    }
}

/// The names bound under a prefix, and whether some were left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    pub names: Vec<Vec<u8>>,
    pub truncated: bool,
}

impl Listing {
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

/// Names bound in this network namespace that start with `prefix`.
pub fn list(prefix: &[u8]) -> io::Result<Listing> {
    let file = std::fs::File::open(LISTING)?;
    parse(io::BufReader::new(file), prefix)
}

fn parse(mut input: impl BufRead, prefix: &[u8]) -> io::Result<Listing> {
    let mut listing = Listing::default();
    let mut line = Vec::new();
    let needle = [b" @".as_slice(), prefix].concat();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
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
        if listing.names.contains(&name) {
            continue;
        }
        if listing.names.len() == MAX_LISTED {
            listing.truncated = true;
            break;
        }
        listing.names.push(name);
    }
    Ok(listing)
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
    fn the_listing_keeps_our_names_once_and_bounds_the_rest() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 100 @container-run/p/t/1\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 101 /run/other.sock\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 102 @container-run/q/t/2\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 103 @container-run/p/t/1\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 104 @x @container-run/p/u/3\n";
        let got = parse(text.as_bytes(), b"container-run/p/").unwrap();
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
        let got = parse(many.as_bytes(), b"container-run/p/").unwrap();
        assert_eq!(got.names.len(), MAX_LISTED);
        assert!(got.truncated);
    }
}
