//! Minimal `--key value` / `--key=value` / `--flag` argument parsing.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Options that take no value.
const FLAGS: &[&str] = &["eof", "remote", "cpu-here", "reference", "all", "reset-ok", "pin"];

pub struct Args {
    opts: HashMap<String, String>,
    flags: HashSet<String>,
    used: RefCell<HashSet<String>>,
}

/// Parse an unsigned number: decimal or 0x-hex, with an optional binary
/// size suffix k/K, m/M or g/G.
pub fn parse_u64(s: &str) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse().ok()?,
    };
    v.checked_mul(mult)
}

impl Args {
    pub fn parse(argv: &[String]) -> Result<Args, String> {
        let mut opts = HashMap::new();
        let mut flags = HashSet::new();
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            let key = a.strip_prefix("--").ok_or_else(|| format!("unexpected argument {a:?}"))?;
            if let Some((k, v)) = key.split_once('=') {
                opts.insert(k.to_string(), v.to_string());
            } else if FLAGS.contains(&key) {
                flags.insert(key.to_string());
            } else {
                let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
                opts.insert(key.to_string(), v.clone());
            }
        }
        Ok(Args { opts, flags, used: RefCell::new(HashSet::new()) })
    }

    pub fn str_opt(&self, k: &str) -> Option<&str> {
        self.used.borrow_mut().insert(k.to_string());
        self.opts.get(k).map(String::as_str)
    }

    pub fn str_req(&self, k: &str) -> Result<&str, String> {
        self.str_opt(k).ok_or_else(|| format!("--{k} is required"))
    }

    pub fn str_or<'a>(&'a self, k: &str, default: &'a str) -> &'a str {
        self.str_opt(k).unwrap_or(default)
    }

    pub fn flag(&self, k: &str) -> bool {
        self.used.borrow_mut().insert(k.to_string());
        self.flags.contains(k)
    }

    fn num<T: TryFrom<u64>>(&self, k: &str) -> Result<Option<T>, String> {
        match self.str_opt(k) {
            None => Ok(None),
            Some(s) => parse_u64(s)
                .and_then(|v| T::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| format!("--{k}: invalid or out-of-range number {s:?}")),
        }
    }

    pub fn u64_req(&self, k: &str) -> Result<u64, String> {
        self.num(k)?.ok_or_else(|| format!("--{k} is required"))
    }

    pub fn u64_or(&self, k: &str, d: u64) -> Result<u64, String> {
        Ok(self.num(k)?.unwrap_or(d))
    }

    pub fn u32_req(&self, k: &str) -> Result<u32, String> {
        self.num(k)?.ok_or_else(|| format!("--{k} is required"))
    }

    pub fn u32_or(&self, k: &str, d: u32) -> Result<u32, String> {
        Ok(self.num(k)?.unwrap_or(d))
    }

    pub fn usize_or(&self, k: &str, d: usize) -> Result<usize, String> {
        Ok(self.num(k)?.unwrap_or(d))
    }

    pub fn secs_or(&self, k: &str, d: u64) -> Result<Duration, String> {
        Ok(Duration::from_secs(self.u64_or(k, d)?))
    }

    /// Reject options the subcommand did not ask for (typos).
    pub fn check_unused(&self) -> Result<(), String> {
        let used = self.used.borrow();
        let mut extra: Vec<&String> =
            self.opts.keys().chain(self.flags.iter()).filter(|k| !used.contains(*k)).collect();
        extra.sort();
        match extra.first() {
            None => Ok(()),
            Some(k) => Err(format!("unknown option --{k}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("10"), Some(10));
        assert_eq!(parse_u64("0x10"), Some(16));
        assert_eq!(parse_u64("4K"), Some(4096));
        assert_eq!(parse_u64("1m"), Some(1 << 20));
        assert_eq!(parse_u64("x"), None);
        assert_eq!(parse_u64(""), None);
    }

    #[test]
    fn parse_and_check() {
        let v: Vec<String> = ["--cid", "2", "--eof", "--port=5"].iter().map(|s| s.to_string()).collect();
        let a = Args::parse(&v).unwrap();
        assert_eq!(a.u32_req("cid").unwrap(), 2);
        assert!(a.check_unused().is_err());
        assert_eq!(a.u32_req("port").unwrap(), 5);
        assert!(a.flag("eof"));
        assert!(a.check_unused().is_ok());
        assert!(a.u32_or("nope", 7).unwrap() == 7);
        let v: Vec<String> = ["--cid", "5000000000"].iter().map(|s| s.to_string()).collect();
        assert!(Args::parse(&v).unwrap().u32_req("cid").is_err());
    }
}
