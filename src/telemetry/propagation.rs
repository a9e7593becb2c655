//! Whose trace a Check joins: the incoming context formats (`OTEL_PROPAGATORS`), B3 among
//! them, and the choice between the gRPC call's metadata and the checked request's headers.

use opentelemetry::propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::Context;

use super::config::Propagators;

pub(super) fn composite_propagator(propagators: &Propagators) -> TextMapCompositePropagator {
    let mut list: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    if propagators.tracecontext {
        list.push(Box::new(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        ));
    }
    if propagators.b3 {
        list.push(Box::new(B3Propagator));
    }
    if propagators.baggage {
        list.push(Box::new(
            opentelemetry_sdk::propagation::BaggagePropagator::new(),
        ));
    }
    TextMapCompositePropagator::new(list)
}

/// Reads Zipkin's B3 context, single (`b3`) or multi-header (`x-b3-*`), as Envoy and Istio
/// send it. Extraction only: the gate starts no outgoing calls that would carry it. (The
/// opentelemetry-zipkin crate, which had one, is deprecated.)
#[derive(Debug)]
struct B3Propagator;

impl B3Propagator {
    fn span_context(carrier: &dyn Extractor) -> Option<opentelemetry::trace::SpanContext> {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let (trace_id, span_id, sampled) = match carrier.get("b3") {
            Some(single) => {
                let mut parts = single.split('-');
                (parts.next()?, parts.next()?, parts.next())
            }
            None => {
                let flags_debug = carrier.get("x-b3-flags") == Some("1");
                let sampled = if flags_debug {
                    Some("1")
                } else {
                    carrier.get("x-b3-sampled")
                };
                (
                    carrier.get("x-b3-traceid")?,
                    carrier.get("x-b3-spanid")?,
                    sampled,
                )
            }
        };
        let hex_ok = |s: &str, lens: &[usize]| {
            lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !hex_ok(trace_id, &[16, 32]) || !hex_ok(span_id, &[16]) {
            return None;
        }
        let trace_id = TraceId::from_hex(&format!("{trace_id:0>32}")).ok()?;
        let span_id = SpanId::from_hex(span_id).ok()?;
        // Absent means "deferred"; Envoy decides upstream, so follow it as sampled.
        let flags = match sampled {
            Some("0" | "false") => TraceFlags::default(),
            _ => TraceFlags::SAMPLED,
        };
        let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
        context.is_valid().then_some(context)
    }
}

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, _: &Context, _: &mut dyn opentelemetry::propagation::Injector) {}

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match Self::span_context(extractor) {
            Some(remote) => cx.with_remote_span_context(remote),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        const FIELDS: [String; 0] = [];
        opentelemetry::propagation::text_map_propagator::FieldIter::new(&FIELDS)
    }
}

/// The caller's trace context: from the gRPC call's metadata, else from the request headers
/// Envoy forwarded in the CheckRequest.
pub fn parent_context(metadata: &dyn Extractor, forwarded: &dyn Extractor) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        let from_metadata = propagator.extract(metadata);
        if from_metadata.span().span_context().is_valid() {
            from_metadata
        } else {
            propagator.extract(forwarded)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Map(HashMap<&'static str, &'static str>);

    impl Extractor for Map {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).copied()
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().copied().collect()
        }
    }

    fn b3(pairs: &[(&'static str, &'static str)]) -> Option<(String, String, bool)> {
        let context = B3Propagator::span_context(&Map(pairs.iter().copied().collect()))?;
        Some((
            context.trace_id().to_string(),
            context.span_id().to_string(),
            context.is_sampled(),
        ))
    }

    #[test]
    fn b3_single_and_multi_header() {
        let single = b3(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )])
        .unwrap();
        assert_eq!(
            single,
            (
                "80f198ee56343ba864fe8b2a57d3eff7".into(),
                "e457b5a2e4d86bd1".into(),
                true
            )
        );
        let short = b3(&[
            ("x-b3-traceid", "64fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
        ])
        .unwrap();
        assert_eq!(
            short,
            (
                "000000000000000064fe8b2a57d3eff7".into(),
                "e457b5a2e4d86bd1".into(),
                false
            )
        );
        assert!(b3(&[("b3", "1")]).is_none());
        assert!(b3(&[("b3", "zz-yy-1")]).is_none());
        assert!(b3(&[
            ("x-b3-traceid", "00000000000000000000000000000000"),
            ("x-b3-spanid", "e457b5a2e4d86bd1")
        ])
        .is_none());
    }
}
