"""The proxy's metrics: counted from each record, rendered by prometheus_client."""

from __future__ import annotations

from core.usage import UsageRecord
from proxy.metrics import ProxyMetrics


def test_metrics_count_each_record_and_render_for_prometheus() -> None:
    metrics = ProxyMetrics(unsent=lambda: 3, key_armed=lambda: True, in_flight=lambda: 1)
    record = UsageRecord(
        record_id="a" * 32, session_id="s", tenant_id="t", actor="candidate", method="POST",
        endpoint="/v1/messages", started_at="2026-11-29T00:00:00+00:00", stream=False,
        http_status=200, complete=True, input_tokens=5, output_tokens=7, latency_ms=120.0,
        ttfb_ms=30.0,
    )  # fmt: skip
    metrics.observe(record)
    metrics.observe(record)
    text = metrics.render().decode()
    lines = set(text.splitlines())
    assert (
        'metrux_proxy_upstream_calls_total{complete="true",endpoint="/v1/messages",status="200"}'
        " 2.0"
    ) in lines
    assert (
        'metrux_proxy_upstream_latency_seconds_bucket{endpoint="/v1/messages",le="0.1"} 0.0'
        in lines
    )
    assert (
        'metrux_proxy_upstream_latency_seconds_bucket{endpoint="/v1/messages",le="0.25"} 2.0'
        in lines
    )
    assert 'metrux_proxy_upstream_ttfb_seconds_count{endpoint="/v1/messages"} 2.0' in lines
    assert 'metrux_proxy_tokens_total{kind="output"} 14.0' in lines
    assert "metrux_proxy_records_total 2.0" in lines
    assert "metrux_proxy_records_unsent 3.0" in lines
    assert "metrux_proxy_key_armed 1.0" in lines
    assert "metrux_proxy_calls_in_flight 1.0" in lines
