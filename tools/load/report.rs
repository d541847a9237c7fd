//! The end of a run: a table for people and one JSON line for scripts.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

pub struct Summary {
    mode: &'static str,
    seconds: f64,
    messages: u64,
    bytes: u64,
    failed_requests: u64,
    acks: String,
    size: usize,
    /// Milliseconds: p50, p99, p99.9, max (None with acks=0: nothing is answered).
    latency_ms: Option<[f64; 4]>,
}

/// What a run did, for its summary.
pub struct Run<'a> {
    pub mode: &'static str,
    pub elapsed: Duration,
    pub messages: u64,
    pub bytes: u64,
    pub failed_requests: u64,
    pub acks: &'a str,
    pub size: usize,
}

impl Summary {
    pub fn of(run: &Run, histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            mode: run.mode,
            seconds: run.elapsed.as_secs_f64(),
            messages: run.messages,
            bytes: run.bytes,
            failed_requests: run.failed_requests,
            acks: run.acks.to_string(),
            size: run.size,
            latency_ms: (!histogram.is_empty()).then(|| {
                [
                    ms(histogram.value_at_quantile(0.5)),
                    ms(histogram.value_at_quantile(0.99)),
                    ms(histogram.value_at_quantile(0.999)),
                    ms(histogram.max()),
                ]
            }),
        }
    }

    fn rates(&self) -> (f64, f64) {
        let seconds = self.seconds.max(f64::EPSILON);
        (
            self.messages as f64 / seconds,
            self.bytes as f64 / seconds / (1 << 20) as f64,
        )
    }

    pub fn table(&self) -> String {
        let (messages_per_s, mib_per_s) = self.rates();
        let latency = match self.latency_ms {
            Some([p50, p99, p999, max]) => {
                format!("latency ms  p50 {p50:.2}  p99 {p99:.2}  p99.9 {p999:.2}  max {max:.2}")
            }
            None => "latency     (acks=0: not answered)".into(),
        };
        format!(
            "{}: acks={} size={} B: {} messages in {:.1} s\nthroughput  {messages_per_s:.0} msgs/s  \
             {mib_per_s:.1} MiB/s\n{latency}\nfailed requests {}",
            self.mode, self.acks, self.size, self.messages, self.seconds, self.failed_requests
        )
    }

    pub fn json(&self) -> String {
        let (messages_per_s, mib_per_s) = self.rates();
        let [p50, p99, p999, max] = self.latency_ms.unwrap_or([-1.0; 4]);
        format!(
            "{{\"mode\":\"{}\",\"acks\":\"{}\",\"size\":{},\"messages\":{},\"bytes\":{},\
             \"seconds\":{:.3},\"msgs_per_s\":{messages_per_s:.0},\"mib_per_s\":{mib_per_s:.2},\
             \"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"p999_ms\":{p999:.3},\"max_ms\":{max:.3},\
             \"failed_requests\":{}}}",
            self.mode,
            self.acks,
            self.size,
            self.messages,
            self.bytes,
            self.seconds,
            self.failed_requests
        )
    }
}

/// Writes `histogram` (microseconds) as an HdrHistogram percentile distribution in
/// milliseconds, the `.hgrm` text that HdrHistogram's plotters and `chronik-plot` read.
pub fn write_percentiles(path: &Path, histogram: &Histogram<u64>) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let quantile = step.quantile_iterated_to();
        let inverse = if quantile < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - quantile))
        } else {
            format!("{:>14}", "")
        };
        writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {inverse}",
            step.value_iterated_to() as f64 / 1000.0,
            quantile,
            total
        )?;
    }
    writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        histogram.mean() / 1000.0,
        histogram.stdev() / 1000.0
    )?;
    writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        histogram.max() as f64 / 1000.0,
        histogram.len()
    )?;
    out.flush()?;
    Ok(())
}
