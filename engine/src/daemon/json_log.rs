//! `[log] format = "json"`: one JSON object per line on stderr, for log pipelines (Loki,
//! Elasticsearch, Vector) that read fields rather than parse text. Each line holds
//! `timestamp` (RFC 3339, UTC), `level`, `target`, `span` (the innermost span's name, when in
//! one), the fields of every span the event is in (outermost first, an inner span's value
//! winning) and the event's own fields, `message` included. The keys are the field names the
//! code writes, the same ones the text format shows (`device`, `model`, `request_id`).

use serde_json::{Map, Value};
use std::fmt;
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The JSON-lines layer (writes to stderr).
#[derive(Debug, Default)]
pub struct JsonLayer;

/// A span's fields, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct Visitor<'a>(&'a mut Map<String, Value>);

impl Visit for Visitor<'_> {
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_error(&mut self, f: &Field, v: &(dyn std::error::Error + 'static)) {
        self.0.insert(f.name().into(), Value::from(v.to_string()));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.0
            .insert(f.name().into(), Value::from(format!("{v:?}")));
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut Visitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(f) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut Visitor(&mut f.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::from(rfc3339_now()));
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        if let Some(scope) = ctx.event_scope(event) {
            let mut innermost = None;
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    line.extend(f.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                innermost = Some(span.name());
            }
            if let Some(name) = innermost {
                line.insert("span".into(), Value::from(name));
            }
        }
        event.record(&mut Visitor(&mut line));
        // A `log` crate record (a dependency's): its own target, not `log`, and no `log.*` keys.
        if let Some(target) = line.remove("log.target") {
            line.insert("target".into(), target);
            for k in ["log.file", "log.line", "log.module_path"] {
                line.remove(k);
            }
        }
        let Ok(mut bytes) = serde_json::to_vec(&Value::Object(line)) else {
            return;
        };
        bytes.push(b'\n');
        // One write per line: lines from several threads do not interleave.
        let _ = std::io::stderr().lock().write_all(&bytes);
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_millis())
}

/// `secs` after the Unix epoch (and `millis`) as RFC 3339 in UTC (civil-from-days, H. Hinnant).
fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_764_518_460, 999), "2025-11-30T16:01:00.999Z");
    }

    /// The fields a line carries: the span's (recorded late too) and the event's.
    #[test]
    fn span_fields_reach_the_event() {
        let captured = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Map<String, Value>>::new()));
        struct Capture(std::sync::Arc<std::sync::Mutex<Vec<Map<String, Value>>>>);
        impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
            fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
                let mut m = Map::new();
                for span in ctx
                    .event_scope(event)
                    .into_iter()
                    .flat_map(|s| s.from_root())
                {
                    if let Some(f) = span.extensions().get::<SpanFields>() {
                        m.extend(f.0.clone());
                    }
                }
                event.record(&mut Visitor(&mut m));
                self.0.lock().expect("test lock").push(m);
            }
        }
        let sub = tracing_subscriber::registry()
            .with(JsonLayer)
            .with(Capture(captured.clone()));
        tracing::subscriber::with_default(sub, || {
            let outer = tracing::info_span!(
                "request",
                device = "cam-01",
                model = "m",
                request_id = tracing::field::Empty
            );
            let _g = outer.enter();
            outer.record("request_id", "00ab");
            tracing::info!(took_ms = 3u64, "answered");
        });
        let got = captured.lock().expect("test lock");
        let m = &got[0];
        assert_eq!(m["device"], "cam-01");
        assert_eq!(m["model"], "m");
        assert_eq!(m["request_id"], "00ab");
        assert_eq!(m["took_ms"], 3);
        assert_eq!(m["message"], "answered");
    }
}
