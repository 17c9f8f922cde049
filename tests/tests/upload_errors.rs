//! Bad input from a peer gets a clear gRPC status and leaves stored data intact: wrong CRC, a gap in
//! offsets, a frame that inflates beyond its declared size, a wrong SHA-256 at finish, an unknown sweep,
//! an oversized message, a missing open, an unsafe name; and uploads beyond the in-flight limit are refused
//! with a retry hint.

use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;
use tracefleet_common::wire::{self, CHUNK_RAW_BYTES};
use tracefleet_proto::v1::sweep_spec::Backend;
use tracefleet_proto::v1::trace_upload_client::TraceUploadClient;
use tracefleet_proto::v1::{
    Point, ReplayBackend, SweepRef, SweepSpec, UploadChunk, UploadFinish, UploadId, UploadOpen, WriteRequest,
    WriteResponse,
};
use tracefleet_tests::procs::{Coord, Proc, agent, submit, wait_agents};

/// A coordinator with one agent and a running sweep to upload into: the agent's job (`{sweep}-j0`, point
/// `p`) replays one trace and then waits 10 minutes, so the sweep stays open while the test uploads as
/// that job.
async fn setup(tmp: &std::path::Path, extra: &[&str]) -> (Coord, Proc, String) {
    let coord = Coord::start(&tmp.join("coord"), "127.0.0.1:0", extra).expect("coord");
    let a = agent(&coord.addr, "agent-x", &tmp.join("spool")).expect("agent");
    let mut c = coord.client().await.expect("client");
    wait_agents(&mut c, 1).await.expect("agent");
    let replay = tmp.join("replay/decode/logs_1");
    std::fs::create_dir_all(&replay).expect("mkdir");
    std::fs::copy(
        tracefleet_tests::fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst"),
        replay.join("trace_0.json.zst"),
    )
    .expect("copy");
    let spec = SweepSpec {
        name: "uploads".into(),
        points: vec![Point {
            point_id: "p".into(),
            mode: tracefleet_proto::v1::Mode::Decode.into(),
            batch_size: 1,
            input_len: 1,
            output_len: 0,
            ..Default::default()
        }],
        placement: tracefleet_proto::v1::Placement::Spread.into(),
        backend: Some(Backend::Replay(ReplayBackend {
            dir: tmp.join("replay").display().to_string(),
            delay_ms: 600_000,
        })),
        ..Default::default()
    };
    let id = submit(&mut c, spec).await.expect("submit");
    // The agent's own trace is in before the test's uploads (the counts below are the test's plus one).
    let t0 = std::time::Instant::now();
    while c.status(SweepRef { sweep_id: id.clone() }).await.expect("status").into_inner().traces_uploaded < 1 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the agent's trace did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (coord, a, id)
}

/// An upload of point `p` by the agent's job.
fn id(sweep: &str, name: &str) -> UploadId {
    UploadId {
        sweep_id: sweep.into(),
        point_id: "p".into(),
        host: "agent-x".into(),
        trace_name: name.into(),
        job_id: format!("{sweep}-j0"),
    }
}

fn raw_trace(n: usize) -> Vec<u8> {
    // A real trace's bytes, cut to size: compressible like the real thing.
    let t = zstd::decode_all(
        &std::fs::read(tracefleet_tests::fixture("h200-llama-1b/decode/logs_1/trace_0.json.zst")).expect("fixture")[..],
    )
    .expect("zstd");
    t.iter().cycle().take(n).copied().collect()
}

fn chunk(seq: u64, off: usize, raw: &[u8]) -> UploadChunk {
    let c = wire::compress_chunk(seq, off as u64, raw).expect("compress");
    UploadChunk { seq, raw_offset: off as u64, raw_len: c.raw_len, crc32c: c.crc32c, zstd_frame: c.frame }
}

async fn client(coord: &Coord) -> TraceUploadClient<Channel> {
    TraceUploadClient::connect(format!("http://{}", coord.addr)).await.expect("connect")
}

/// Sends the requests as one Write stream.
async fn write(c: &mut TraceUploadClient<Channel>, reqs: Vec<WriteRequest>) -> Result<WriteResponse, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(reqs.len().max(1));
    for r in reqs {
        tx.send(r).await.expect("queue");
    }
    drop(tx);
    c.write(ReceiverStream::new(rx)).await.map(|r| r.into_inner())
}

fn open(uid: UploadId, raw_size: usize) -> Option<UploadOpen> {
    Some(UploadOpen { id: Some(uid), raw_size: raw_size as u64, gpu: String::new(), telemetry: None })
}

async fn committed(c: &mut TraceUploadClient<Channel>, uid: &UploadId) -> (u64, bool) {
    let s = c.query_write_status(uid.clone()).await.expect("query").into_inner();
    (s.committed_offset, s.complete)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunks_are_refused_and_stored_data_stays_intact() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (coord, _agent, sweep) = setup(tmp.path(), &["--commit-every-bytes", "1"]).await;
    let mut c = client(&coord).await;
    let raw = raw_trace(3 * CHUNK_RAW_BYTES + 12345);
    let uid = id(&sweep, "test/trace_up.json");
    let cut = |k: usize| &raw[k * CHUNK_RAW_BYTES..((k + 1) * CHUNK_RAW_BYTES).min(raw.len())];
    let req = |o: Option<UploadOpen>, ch: Option<UploadChunk>, f: Option<UploadFinish>| WriteRequest {
        open: o,
        chunk: ch,
        finish: f,
    };

    // One good chunk, committed.
    let r = write(&mut c, vec![req(open(uid.clone(), raw.len()), Some(chunk(0, 0, cut(0))), None)])
        .await
        .expect("first chunk");
    assert_eq!((r.committed_offset, r.complete), (CHUNK_RAW_BYTES as u64, false));
    let stored = || std::fs::read_dir(tmp.path().join("coord/traces")).is_ok();
    assert!(stored());

    // Wrong CRC: DATA_LOSS, nothing more committed.
    let mut bad = chunk(1, CHUNK_RAW_BYTES, cut(1));
    bad.crc32c ^= 0xdead_beef;
    let e = write(&mut c, vec![req(open(uid.clone(), raw.len()), Some(bad), None)]).await.expect_err("bad crc");
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains("CRC32C"), "{}", e.message());
    assert_eq!(committed(&mut c, &uid).await, (CHUNK_RAW_BYTES as u64, false));

    // A gap: OUT_OF_RANGE naming the expected offset.
    let e = write(&mut c, vec![req(open(uid.clone(), raw.len()), Some(chunk(2, 2 * CHUNK_RAW_BYTES, cut(2))), None)])
        .await
        .expect_err("gap");
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains(&format!("expected {CHUNK_RAW_BYTES}")), "{}", e.message());
    assert_eq!(committed(&mut c, &uid).await, (CHUNK_RAW_BYTES as u64, false));

    // A frame that inflates beyond its declared size: INVALID_ARGUMENT.
    let mut inflating = chunk(1, CHUNK_RAW_BYTES, cut(1));
    inflating.raw_len = 1000;
    let e = write(&mut c, vec![req(open(uid.clone(), raw.len()), Some(inflating), None)]).await.expect_err("inflates");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("declared 1000 bytes"), "{}", e.message());

    // An oversized message (5 MiB frame): refused by the message limit.
    let mut huge = chunk(1, CHUNK_RAW_BYTES, cut(1));
    huge.zstd_frame = vec![7u8; 5 << 20];
    let mut big = client(&coord).await.max_encoding_message_size(16 << 20);
    let e = write(&mut big, vec![req(open(uid.clone(), raw.len()), Some(huge), None)]).await.expect_err("oversized");
    assert!(matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted | Code::Internal), "{e:?}");
    assert_eq!(committed(&mut c, &uid).await, (CHUNK_RAW_BYTES as u64, false));

    // A repeated chunk is acknowledged and ignored; the rest arrives; finish with a wrong SHA-256.
    let mut reqs = vec![req(open(uid.clone(), raw.len()), Some(chunk(0, 0, cut(0))), None)];
    for k in 1..4 {
        reqs.push(req(None, Some(chunk(k as u64, k * CHUNK_RAW_BYTES, cut(k))), None));
    }
    reqs.push(req(None, None, Some(UploadFinish { sha256: vec![0; 32] })));
    let e = write(&mut c, reqs).await.expect_err("wrong sha");
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains("SHA-256 mismatch"), "{}", e.message());
    assert_eq!(committed(&mut c, &uid).await, (raw.len() as u64, false), "bytes kept, trace not counted");

    // The right SHA-256 completes it, from the stored bytes.
    let sha = wire::sha256(&raw).to_vec();
    let r = write(&mut c, vec![req(open(uid.clone(), raw.len()), None, Some(UploadFinish { sha256: sha.clone() }))])
        .await
        .expect("finish");
    assert!(r.complete && !r.duplicate);
    assert_eq!(committed(&mut c, &uid).await, (raw.len() as u64, true));
    // And again: "complete", counted once.
    let r = write(&mut c, vec![req(open(uid.clone(), raw.len()), None, Some(UploadFinish { sha256: sha }))])
        .await
        .expect("again");
    assert!(r.complete && r.duplicate);
    assert_eq!(coord.metric("tracefleet_uploads_completed_total"), 2.0, "the agent's trace and this one");
    assert_eq!(coord.metric("tracefleet_uploads_duplicate_total"), 1.0);

    // Unknown sweep, missing open, unsafe name.
    let e = write(&mut c, vec![req(open(id("no-such-sweep", "t.json"), 10), None, None)]).await.expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = write(&mut c, vec![req(None, Some(chunk(0, 0, b"{}")), None)]).await.expect_err("no open");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = write(&mut c, vec![req(open(id(&sweep, "../../etc/x.json"), 10), None, None)]).await.expect_err("unsafe");
    assert_eq!(e.code(), Code::InvalidArgument);

    // The stored trace is intact: the bytes on disk decompress to exactly what was sent.
    let path = tmp.path().join(format!("coord/traces/{sweep}/agent-x/p/test%2Ftrace_up.json.zst"));
    let back = zstd::decode_all(&std::fs::read(path).expect("read")[..]).expect("zstd");
    assert!(back == raw, "stored bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_limit_get_a_retry_hint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (coord, _agent, sweep) = setup(tmp.path(), &["--max-inflight-uploads", "1"]).await;
    let mut c = client(&coord).await;
    // Hold the only slot with an open stream.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WriteRequest { open: open(id(&sweep, "a.json"), 100), chunk: None, finish: None }).await.expect("send");
    let mut held = c.clone();
    let pending = tokio::spawn(async move { held.write(ReceiverStream::new(rx)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = write(&mut c, vec![WriteRequest { open: open(id(&sweep, "b.json"), 100), chunk: None, finish: None }])
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(e.metadata().get("retry-after-ms").and_then(|v| v.to_str().ok()), Some("500"));
    assert!(coord.metric("tracefleet_uploads_rejected_total") >= 1.0);
    drop(tx);
    let _ = pending.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_time_out_and_one_agent_cannot_take_every_slot() {
    let tmp = tempfile::tempdir().expect("tmp");
    let limits = ["--upload-first-message-ms", "300", "--upload-idle-ms", "500", "--max-uploads-per-agent", "2"];
    let (coord, _agent, sweep) = setup(tmp.path(), &limits).await;
    let c = client(&coord).await;

    // 300 streams that never send a first message (more than the 256 upload slots): each is ended after
    // 300 ms with DEADLINE_EXCEEDED (or refused by the per-connection stream limit), and none holds an
    // upload slot meanwhile.
    let mut idle = Vec::new();
    for _ in 0..300 {
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteRequest>(1);
        let mut cc = c.clone();
        idle.push((tx, tokio::spawn(async move { cc.write(ReceiverStream::new(rx)).await })));
    }
    let mut c2 = c.clone();
    let raw = raw_trace(1000);
    let uid = id(&sweep, "during-idle.json");
    let r = write(
        &mut c2,
        vec![
            WriteRequest { open: open(uid.clone(), raw.len()), chunk: Some(chunk(0, 0, &raw)), finish: None },
            WriteRequest {
                open: None,
                chunk: None,
                finish: Some(UploadFinish { sha256: wire::sha256(&raw).to_vec() }),
            },
        ],
    )
    .await
    .expect("an upload goes through while idle streams wait");
    assert!(r.complete);
    // Each idle stream is ended by the first-message timeout, or refused outright by the limit of streams
    // per connection (64; the client sent them all on one connection).
    let mut timed_out = 0;
    for (tx, task) in idle {
        let e = task.await.expect("join").expect_err("an idle stream is ended");
        match e.code() {
            Code::DeadlineExceeded => {
                assert!(e.message().contains("no first message within 300 ms"), "{}", e.message());
                timed_out += 1;
            }
            _ => assert!(format!("{e:?}").contains("REFUSED_STREAM"), "{e:?}"),
        }
        drop(tx);
    }
    assert!(timed_out >= 64, "{timed_out} streams timed out");

    // One agent may hold two streams; a third is refused with a retry hint. A stream that goes silent
    // after its open is ended after 500 ms, its bytes committed.
    let mut held = Vec::new();
    for k in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let uid = id(&sweep, &format!("held-{k}.json"));
        tx.send(WriteRequest { open: open(uid, raw.len()), chunk: Some(chunk(0, 0, &raw[..500])), finish: None })
            .await
            .expect("send");
        let mut cc = c.clone();
        held.push((tx, tokio::spawn(async move { cc.write(ReceiverStream::new(rx)).await })));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let e = write(&mut c2, vec![WriteRequest { open: open(id(&sweep, "third.json"), 10), chunk: None, finish: None }])
        .await
        .expect_err("a third stream of one agent");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("agent \"agent-x\" has 2 uploads in flight"), "{}", e.message());
    assert_eq!(e.metadata().get("retry-after-ms").and_then(|v| v.to_str().ok()), Some("500"));
    for (tx, task) in held {
        let e = task.await.expect("join").expect_err("a silent stream is ended");
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        drop(tx);
    }
    assert_eq!(committed(&mut c2, &id(&sweep, "held-0.json")).await, (500, false), "the silent stream's bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_names_that_once_shared_a_file_are_stored_apart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (coord, _agent, sweep) = setup(tmp.path(), &[]).await;
    let mut c = client(&coord).await;
    // `x/y.json` and `x__y.json` were both stored as `x__y.json.zst`: one trace overwrote the other.
    let names = ["x/y.json", "x__y.json", "x%2Fy.json"];
    let bodies: Vec<Vec<u8>> = (0..3).map(|k| raw_trace(2000 + 100 * k)).collect();
    for (name, raw) in names.iter().zip(&bodies) {
        let uid = id(&sweep, name);
        let r = write(
            &mut c,
            vec![
                WriteRequest { open: open(uid.clone(), raw.len()), chunk: Some(chunk(0, 0, raw)), finish: None },
                WriteRequest {
                    open: None,
                    chunk: None,
                    finish: Some(UploadFinish { sha256: wire::sha256(raw).to_vec() }),
                },
            ],
        )
        .await
        .expect("upload");
        assert!(r.complete && !r.duplicate, "{name}: {r:?}");
    }
    let dir = tmp.path().join(format!("coord/traces/{sweep}/agent-x/p"));
    for (file, raw) in ["x%2Fy.json.zst", "x__y.json.zst", "x%252Fy.json.zst"].iter().zip(&bodies) {
        let back = zstd::decode_all(&std::fs::read(dir.join(file)).expect(file)[..]).expect("zstd");
        assert!(&back == raw, "{file} holds its own trace");
    }
}
