//! rvsock-tests: userspace AF_VSOCK tests run inside the rvsock test VMs.
//! See README.md for the subcommands and the output protocol.

mod args;
mod bench;
mod bench_stats;
mod cmds;
mod diag;
mod fake_guest;
mod observe;
mod proto;
mod regress;
mod regress_guest;
mod regress_mem;
mod regress_sync;
mod report;
mod selftest;
mod soak;
mod soak_plan;
mod splice;
mod sys;
mod vhost_capture;
mod vhost_device;
mod vhost_hostile;

use std::process::ExitCode;

const USAGE: &str = "\
usage: rvsock-tests SUBCOMMAND [OPTIONS]

  stream-send --cid C --port P --bytes N [--seed S] [--chunk K] [--eof] [--name NAME] [--timeout SECS]
              [--reset-ok]   (a connection reset passes; wrong bytes, short streams, timeouts fail)
              [--reset-as ERRNO]  (only a reset with this errno passes, e.g. ECONNRESET)
  stream-recv --port P [--cid C] [--count M] [--name NAME] [--timeout SECS] [--reset-ok|--reset-as ERRNO]
  local-cid   [--expect C] [--name NAME]   this machine's CID (/dev/vsock)
  bind-any    [--count N]   bind N sockets to PORT_ANY in turn, print the last port
  concurrent  --cid C --port P --conns N --bytes B [--seed S] [--chunk K] [--eof] [--name NAME] [--timeout SECS]
  uds-send    --uds PATH --port P --bytes N [--seed S] [--chunk K] [--eof] [--name NAME] [--timeout SECS]
  uds-recv    --listen PATH [--count M] [--name NAME] [--timeout SECS]
  selftest    [--peer-cid C] [--conns N] [--bytes B] [--unreachable-cid C] [--only SUBSTRING]
  rmmod-while-open --modules a,b,... [--cid C] [--timeout SECS]
  bench       [--peer-cid C] [--port P] [--ms MILLIS] [--idle-conns N] [--remote [--cpu-here]] [--pin]
              [--only METRIC[,METRIC...]]
  bench-serve [--port P] [--secs S]
  soak        [--cycles N] [--concurrency C] [--seed S] [--peer-cid C] [--timeout SECS] [--max-bytes B]
              [--only SUBSTRING[,SUBSTRING...]] [--family vsock|unix]
  vhost-hostile [--cid C] [--rx-buf BYTES]
  vhost-cid --cid C --own G
  regress     [--reference] [--scale PERCENT] [--guest-cid C] [--only SUBSTRING]
  observe     [--reference]          sock_diag, iproute2 ss and rvsock's credit attribute (loopback)
  ss          [--all]                every vsock connection with its credit state (sock_diag)
  splice-send --cid C --port P --bytes N [--seed S] [--name NAME] [--timeout SECS]   sendfile(2) a file
  splice-recv --port P --bytes N [--seed S] [--name NAME] [--timeout SECS]   splice(2) into a pipe, hash

Numbers accept 0x hex and k/m/g suffixes. Each test prints
`RVSOCK-TEST ok|fail|skip NAME`; the exit status is 1 if any test failed,
2 on a usage error.";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let run = |f: fn(&args::Args) -> Result<(), String>| args::Args::parse(&argv[1..]).and_then(|a| f(&a));
    let r = match cmd.as_str() {
        "stream-send" => run(cmds::stream_send),
        "stream-recv" => run(cmds::stream_recv),
        "local-cid" => run(cmds::local_cid),
        "bind-any" => run(cmds::bind_any),
        "concurrent" => run(cmds::concurrent),
        "uds-send" => run(cmds::uds_send),
        "uds-recv" => run(cmds::uds_recv),
        "selftest" => run(selftest::run),
        "bench" => run(bench::run),
        "bench-serve" => run(bench::serve_cmd),
        "soak" => run(soak::run),
        "rmmod-while-open" => run(cmds::rmmod_while_open),
        "vhost-hostile" => run(vhost_hostile::run),
        "vhost-cid" => run(vhost_device::run_cid),
        "regress" => run(regress::run),
        "observe" => run(observe::run),
        "ss" => run(diag::ss_cmd),
        "splice-send" => run(splice::send_cmd),
        "splice-recv" => run(splice::recv_cmd),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => Err(format!("unknown subcommand {other:?}")),
    };
    match r {
        Err(e) => {
            eprintln!("rvsock-tests {cmd}: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Ok(()) if report::any_failed() => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
    }
}
