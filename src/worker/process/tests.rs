//! The stop state machine (deadline or stop -> SIGTERM -> grace -> SIGKILL to the group, then
//! whatever escaped) against real `sh -c` children. Children say they are ready on stdout, and
//! the stop is asked for from the line handler, so no test depends on how fast a shell starts.
//!
//! A paused clock serves where time is the subject, but only partly with real children: a paused
//! tokio clock jumps to the next timer whenever the runtime is idle, and waiting for a child is
//! being idle. Paused from the start, the deadline would pass before the child had even set its
//! traps; paused during a grace that a child uses to react (a TERM trap), the grace would be over
//! before the trap ran. So the clock is paused only once the child is ready and only for a child
//! that ignores SIGTERM: then nothing the child does can change the outcome while the clock
//! jumps, and an hour of grace takes no real time. The other cases run on the real clock with
//! sub-second deadlines and graces far longer than the test, asserting lower and upper bounds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Ended, Verdict, run};
use crate::worker::command::Plan;
use crate::worker::outcome::Stop;

const HOUR: Duration = Duration::from_secs(3600);

fn sh(script: &str) -> Plan {
    let env: BTreeMap<String, String> = [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into();
    Plan {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.into()],
        env,
        cwd: std::env::temp_dir(),
        stdin: String::new(),
    }
}

/// Runs `plan`; the line handler records every line and asks for a stop at `ready`.
async fn run_until_ready(plan: &Plan, deadline: Duration, grace: Duration) -> (Ended, Vec<String>) {
    let mut lines = Vec::new();
    let cancel = CancellationToken::new();
    let ended = run(
        plan,
        deadline,
        &cancel,
        || Stop::Cancelled,
        grace,
        |line| {
            lines.push(line.to_owned());
            if line == "ready" { Verdict::Stop(Stop::Cancelled) } else { Verdict::Continue }
        },
    )
    .await
    .expect("sh starts");
    (ended, lines)
}

/// Whether `pid` is a live process (a zombie is dead).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| super::reaper::parse_stat(&stat))
        .is_some_and(|p| p.state != 'Z')
}

#[tokio::test]
async fn a_child_that_traps_term_exits_by_itself_within_the_grace() {
    let plan = sh("trap 'echo bye; exit 3' TERM; echo ready; while :; do sleep 0.01; done");
    let started = Instant::now();
    let (ended, lines) = run_until_ready(&plan, HOUR, Duration::from_secs(60)).await;
    assert_eq!(ended.stop, Some(Stop::Cancelled));
    assert_eq!((ended.exit.code, ended.exit.signal), (Some(3), None), "its trap ran: {lines:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "it did not wait for the grace: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_child_that_ignores_term_is_killed_when_the_grace_is_over() {
    let plan = sh("trap '' TERM; echo ready; while :; do sleep 1; done");
    let (real, cancel) = (Instant::now(), CancellationToken::new());
    let mut paused_at = None;
    let ended = run(
        &plan,
        HOUR * 24,
        &cancel,
        || Stop::Cancelled,
        HOUR,
        |line| {
            if line != "ready" {
                return Verdict::Continue;
            }
            tokio::time::pause();
            paused_at = Some(tokio::time::Instant::now());
            Verdict::Stop(Stop::Cancelled)
        },
    )
    .await
    .expect("sh starts");
    let waited = paused_at.expect("the child got ready").elapsed();
    assert_eq!((ended.stop, ended.exit.signal), (Some(Stop::Cancelled), Some(9)), "SIGKILL after the grace: {ended:?}");
    // No upper bound on the paused clock: once the child is killed, the idle runtime may jump on
    // to the (now irrelevant) deadline before the exit is seen. The real clock bounds it instead.
    assert!(waited >= HOUR, "killed only once the grace was over: {waited:?}");
    assert!(real.elapsed() < Duration::from_secs(30), "the hour of grace took no real time: {:?}", real.elapsed());
}

#[tokio::test]
async fn the_deadline_sends_term() {
    // Whether TERM reaches the shell or the `sleep` it became, it dies of it: no readiness needed.
    let plan = sh("exec sleep 600");
    let (cancel, started) = (CancellationToken::new(), Instant::now());
    let deadline = Duration::from_millis(200);
    let ended =
        run(&plan, deadline, &cancel, || Stop::Cancelled, HOUR, |_| Verdict::Continue).await.expect("sh starts");
    let took = started.elapsed();
    assert_eq!((ended.stop, ended.exit.signal), (Some(Stop::Deadline), Some(15)), "{ended:?}");
    assert!(took >= deadline && took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn cancelling_stops_the_child_as_the_caller_says() {
    let plan = sh("echo ready; exec sleep 600");
    let cancel = CancellationToken::new();
    let canceller = cancel.clone();
    let ended = run(
        &plan,
        HOUR,
        &cancel,
        || Stop::Shutdown,
        HOUR,
        move |line| {
            if line == "ready" {
                canceller.cancel();
            }
            Verdict::Continue
        },
    )
    .await
    .expect("sh starts");
    assert_eq!((ended.stop, ended.exit.signal), (Some(Stop::Shutdown), Some(15)), "{ended:?}");
}

#[tokio::test]
async fn a_setsid_grandchild_that_ignores_term_dies_with_the_worker_and_holds_up_nothing() {
    // The grandchild leaves the process group, ignores TERM and HUP, keeps stdout and stderr open,
    // and prints its pid once it ignores them; the stop is asked for at that line.
    let plan = sh("setsid sh -c 'trap \"\" TERM HUP; echo $$; exec sleep 600' & wait");
    let cancel = CancellationToken::new();
    let mut grandchild = None;
    let started = Instant::now();
    let ended = run(
        &plan,
        HOUR,
        &cancel,
        || Stop::Cancelled,
        Duration::from_secs(60),
        |line| match line.parse() {
            Ok(pid) => {
                grandchild = Some(pid);
                Verdict::Stop(Stop::Cancelled)
            }
            Err(_) => Verdict::Continue,
        },
    )
    .await
    .expect("sh starts");
    let took = started.elapsed();
    let grandchild: i32 = grandchild.expect("the grandchild printed its pid");
    assert_eq!((ended.stop, ended.exit.signal), (Some(Stop::Cancelled), Some(15)), "{ended:?}");
    assert!(took < super::DRAIN, "waited for a pipe the grandchild held: {took:?} (drain bound {:?})", super::DRAIN);
    // SIGKILL was sent before `run` returned; wait (bounded) for the kernel to finish it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(grandchild) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!alive(grandchild), "the escaped grandchild {grandchild} is still running");
}

#[tokio::test]
async fn a_skipped_grace_kills_a_term_ignoring_child_at_once() {
    // An hour of grace, on the real clock: only the skip (a second signal) can end it in time.
    let plan = sh("trap '' TERM; echo ready; while :; do sleep 1; done");
    let (cancel, skip) = (CancellationToken::new(), CancellationToken::new());
    let grace = super::Grace { period: HOUR, skip: skip.clone() };
    let started = Instant::now();
    let ended = run(
        &plan,
        HOUR,
        &cancel,
        || Stop::Shutdown,
        grace,
        |line| {
            if line == "ready" {
                skip.cancel();
                Verdict::Stop(Stop::Shutdown)
            } else {
                Verdict::Continue
            }
        },
    )
    .await
    .expect("sh starts");
    assert_eq!((ended.stop, ended.exit.signal), (Some(Stop::Shutdown), Some(9)), "{ended:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "the grace was skipped: {:?}", started.elapsed());
}

#[tokio::test]
async fn an_idle_stop_interrupts_first_and_keeps_the_last_lines() {
    // The child answers SIGINT (not SIGTERM) with a last line, as the CLI writes its result then.
    let plan = sh("trap 'echo interrupted; exit 0' INT; echo ready; while :; do sleep 0.05; done");
    let mut lines = Vec::new();
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let ended = super::run_watched(
        &plan,
        HOUR,
        &cancel,
        || Stop::Cancelled,
        HOUR,
        None,
        |line| {
            lines.push(line.to_owned());
            // After `ready`, nothing more is allowed to come for 300 ms.
            let silence = tokio::time::Instant::now() + Duration::from_millis(300);
            if line == "ready" { Verdict::Watch(Some(silence)) } else { Verdict::Continue }
        },
    )
    .await
    .expect("sh starts");
    assert_eq!(ended.stop, Some(Stop::Idle));
    assert_eq!(lines, ["ready", "interrupted"], "the line written after the interrupt is kept");
    assert_eq!(ended.exit.code, Some(0), "it exited by itself, before the hour of grace: {:?}", ended.exit);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(30), "{took:?}");
}
