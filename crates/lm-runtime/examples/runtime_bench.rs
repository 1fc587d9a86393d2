//! Prefill and decode throughput of the runtime, for `bench/runtime.sh`.
//!
//! `runtime_bench MODEL.gguf quantized|f32|bf16 [BATCH] [SEQ] [DECODE] [REPEATS]`
//!
//! * capture-prefill: `BATCH` sequences of `SEQ` seeded random token ids in one forward call,
//!   recording every block's `resid_post` at every position; reported as tokens/s
//!   (`BATCH·SEQ / seconds`, best of `REPEATS`);
//! * plain prefill: the same call with nothing captured (capture overhead =
//!   `t_capture / t_plain − 1`);
//! * decode: greedy generation of `DECODE` tokens after a 16-token prompt, one token per
//!   forward call, tokens/s over the generated tokens (prompt excluded);
//! * peak RSS: `VmHWM` from `/proc/self/status` at the end, and after loading and after each
//!   prefill (`VmRSS` before and after loading too).
//!
//! `BATCH = 0` skips both prefills (decode only; their fields are null).
//!
//! Prints one JSON object on stdout.

use std::time::Instant;

use lm_runtime::generate::{generate_from, Sampling, StopRule};
use lm_runtime::hooks::{Capture, HookPoint, Layer, Positions};
use lm_runtime::model::{Batch, Model, WeightMode};
use rand::{Rng, SeedableRng};

fn vm_hwm_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

/// A `/proc/self/status` field in KiB (`VmHWM:` peak, `VmRSS:` current).
fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> Result<T, String> {
    args.get(i).map_or(Ok(default), |s| {
        s.parse()
            .map_err(|_| format!("argument {i}: cannot parse `{s}`"))
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err(
            "usage: runtime_bench MODEL.gguf quantized|f32|bf16 [BATCH] [SEQ] [DECODE] [REPEATS]"
                .into(),
        );
    }
    let mode = match args[2].as_str() {
        "quantized" => WeightMode::Quantized,
        "f32" => WeightMode::F32,
        "bf16" => WeightMode::Bf16,
        other => return Err(format!("unknown weight mode `{other}`").into()),
    };
    let batch: usize = arg(&args, 3, 8)?;
    let seq: usize = arg(&args, 4, 128)?;
    let decode: usize = arg(&args, 5, 64)?;
    let repeats: usize = arg(&args, 6, 3)?.max(1);

    let rss_start = status_kib("VmRSS:");
    let t0 = Instant::now();
    let model = Model::load(&args[1], mode)?;
    let load_s = t0.elapsed().as_secs_f64();
    let hwm_load = vm_hwm_kib();
    let rss_load = status_kib("VmRSS:");
    let cfg = model.config();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    // Ids from the lower vocabulary: ordinary text pieces, no control tokens at the top.
    let hi = u32::try_from(cfg.vocab_size.min(32_000))?;
    let tokens: Vec<Vec<u32>> = (0..batch)
        .map(|_| (0..seq).map(|_| rng.gen_range(100..hi)).collect())
        .collect();
    let hooks: Vec<HookPoint> = (0..cfg.n_layers)
        .map(|l| HookPoint::ResidPost(Layer(l)))
        .collect();

    let time_prefill = |capture_all: bool| -> Result<f64, Box<dyn std::error::Error>> {
        let mut best = f64::INFINITY;
        for _ in 0..repeats {
            let mut capture = if capture_all {
                Capture::new(hooks.clone(), Positions::All)
            } else {
                Capture::none()
            };
            let mut cache = model.new_cache();
            let t = Instant::now();
            let out = model.forward(&Batch::new(tokens.clone()), &mut capture, &[], &mut cache)?;
            best = best.min(t.elapsed().as_secs_f64());
            if capture_all {
                // Touch the records so the capture cannot be optimised away.
                let last = capture
                    .get(HookPoint::ResidPost(Layer(cfg.n_layers - 1)), batch - 1)?
                    .ok_or("missing capture")?;
                assert_eq!(last.dims(), [seq, cfg.d_model]);
            }
            drop(out);
        }
        Ok(best)
    };
    // BATCH = 0: decode only (the interleaved decode rounds of bench/runtime.py).
    let (t_plain, hwm_plain, t_capture, hwm_capture) = if batch == 0 {
        (f64::NAN, None, f64::NAN, None)
    } else {
        let warm = time_prefill(false)?; // first call: allocator and thread-pool warm-up
        let t_plain = time_prefill(false)?.min(warm);
        let hwm_plain = vm_hwm_kib();
        let t_capture = time_prefill(true)?;
        (t_plain, hwm_plain, t_capture, vm_hwm_kib())
    };

    let prompt: Vec<u32> = (0..16).map(|_| rng.gen_range(100..hi)).collect();
    let mut cache = model.new_cache();
    let logits = model.forward(
        &Batch::single(prompt),
        &mut Capture::none(),
        &[],
        &mut cache,
    )?;
    let logits: Vec<f32> = logits[0].flatten_all()?.to_vec1()?;
    let stop = StopRule {
        max_tokens: decode,
        ..StopRule::default()
    };
    let t = Instant::now();
    let gen = generate_from(
        &model,
        &mut cache,
        logits,
        &Sampling::GREEDY,
        &stop,
        &mut Capture::none(),
        &[],
        &mut rng,
    )?;
    let t_decode = t.elapsed().as_secs_f64();
    let n_gen = gen.tokens.len();
    let ntok = (batch * seq) as f64;
    println!(
        "{}",
        serde_json::json!({
            "mode": args[2],
            "batch": batch, "seq": seq, "repeats": repeats,
            "load_s": load_s,
            "prefill_plain_s": t_plain,
            "prefill_capture_s": t_capture,
            "prefill_plain_tok_s": ntok / t_plain,
            "prefill_capture_tok_s": ntok / t_capture,
            "capture_overhead": t_capture / t_plain - 1.0,
            "capture_bytes": batch * seq * cfg.n_layers * cfg.d_model * 4,
            "decode_tokens": n_gen,
            "decode_tok_s": n_gen as f64 / t_decode,
            "peak_rss_kib": vm_hwm_kib(),
            "peak_rss_after_load_kib": hwm_load,
            "rss_before_load_kib": rss_start,
            "rss_after_load_kib": rss_load,
            "peak_rss_after_plain_prefill_kib": hwm_plain,
            "peak_rss_after_capture_prefill_kib": hwm_capture,
        })
    );
    Ok(())
}
