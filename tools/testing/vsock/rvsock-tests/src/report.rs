//! Output protocol: every test prints exactly one `RVSOCK-TEST ok|fail|skip NAME`
//! line (a fail/skip is preceded by a `# NAME: reason` line), errno rows are
//! `RVSOCK-ERRNO case ENAME`. Lines are flushed one by one.

use std::fmt::Display;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::sys;

/// Success value of a test: passed, or skipped with a reason.
pub enum Outcome {
    Pass,
    Skip(String),
}

/// `Err` carries the reason of a failure.
pub type TestResult = Result<Outcome, String>;

static ANY_FAILED: AtomicBool = AtomicBool::new(false);

/// True once any test printed a `fail` line (decides the exit status).
pub fn any_failed() -> bool {
    ANY_FAILED.load(Ordering::SeqCst)
}

fn emit(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Replace characters that are not allowed in test names.
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect()
}

#[derive(Default)]
struct State {
    /// False once a watchdog gave up on this test: it must stay silent.
    live: bool,
    /// True once the final line was printed.
    finished: bool,
}

/// A line printer for one test. Clones share state so a watchdog can
/// silence a test that it already reported as hung.
#[derive(Clone)]
pub struct Out {
    state: Arc<Mutex<State>>,
}

impl Default for Out {
    fn default() -> Self {
        Out { state: Arc::new(Mutex::new(State { live: true, finished: false })) }
    }
}

impl Out {
    fn with_live<F: FnOnce(&mut State)>(&self, f: F) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.live {
            f(&mut st);
        }
    }

    /// Informational line (ignored by the harness).
    pub fn info(&self, msg: impl Display) {
        self.with_live(|_| emit(&format!("# {msg}")));
    }

    /// An errno-table row, diffed between the in-tree and the rvsock runs.
    pub fn errno_row(&self, case: &str, errno: i32) {
        self.with_live(|_| emit(&format!("RVSOCK-ERRNO {} {}", sanitize(case), sys::errno_name(errno))));
    }

    /// Print the final line of test `name`. Returns true unless it failed.
    pub fn result(&self, name: &str, r: &TestResult) -> bool {
        let name = sanitize(name);
        self.with_live(|st| {
            st.finished = true;
            match r {
                Ok(Outcome::Pass) => emit(&format!("RVSOCK-TEST ok {name}")),
                Ok(Outcome::Skip(why)) => {
                    emit(&format!("# {name}: {why}"));
                    emit(&format!("RVSOCK-TEST skip {name}"));
                }
                Err(why) => {
                    ANY_FAILED.store(true, Ordering::SeqCst);
                    emit(&format!("# {name}: {why}"));
                    emit(&format!("RVSOCK-TEST fail {name}"));
                }
            }
        });
        r.is_ok()
    }

    /// Called by a watchdog: unless the test already finished, silence it and
    /// report it as failed. Returns false if the test had in fact finished.
    pub fn abandon(&self, name: &str, why: &str) -> bool {
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.finished {
                return false;
            }
            st.live = false;
        }
        Out::default().result(name, &Err(why.to_string()));
        true
    }
}

/// Shorthand to turn an `io::Result` into a test failure with context.
pub trait OrFail<T> {
    fn or_fail(self, what: &str) -> Result<T, String>;
}

impl<T> OrFail<T> for io::Result<T> {
    fn or_fail(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {}", sys::describe(&e)))
    }
}
