//! The end of a run: a table for people and one JSON line for scripts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::connection::Totals;

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

impl Summary {
    pub fn of(
        totals: &Totals,
        elapsed: Duration,
        mode: &'static str,
        acks: &str,
        size: usize,
    ) -> Self {
        let histogram = totals.latency_us.lock().expect("histogram lock");
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            mode,
            seconds: elapsed.as_secs_f64(),
            messages: totals.acked_records.load(Ordering::Relaxed),
            bytes: totals.acked_bytes.load(Ordering::Relaxed),
            failed_requests: totals.failed_requests.load(Ordering::Relaxed),
            acks: acks.to_string(),
            size,
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
