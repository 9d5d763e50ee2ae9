import CoreMetrics
import Foundation
import Metrics
import Pagoda
import Prometheus

typealias MGauge = CoreMetrics.Gauge
typealias MCounter = CoreMetrics.Counter
typealias MTimer = CoreMetrics.Timer

/// vLLM's metrics under the `pagoda:` prefix, kept in a Prometheus registry behind swift-metrics.
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    let running, waiting, kvUsage: MGauge
    let prefixQueries, prefixHits, preemptions, promptTokens, generationTokens: MCounter
    let ttft, itl, e2e, queueTime: MTimer
    private let last = Locked<[String: Int]>([:])

    static let latencyBuckets: [Duration] = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                                             7.5, 10.0, 20.0, 40.0, 80.0].map { .milliseconds(Int64($0 * 1000)) }
    static let requestBuckets: [Duration] = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                                             120.0, 240.0, 480.0, 960.0].map { .milliseconds(Int64($0 * 1000)) }

    /// Creates the metrics; `bootstrap` also makes the factory swift-metrics' global one (once per process).
    public init(bootstrap: Bool) {
        registry = PrometheusCollectorRegistry()
        var f = PrometheusMetricsFactory(registry: registry)
        f.durationHistogramBuckets = [
            "pagoda:time_to_first_token_seconds": Self.latencyBuckets,
            "pagoda:inter_token_latency_seconds": Self.latencyBuckets,
            "pagoda:e2e_request_latency_seconds": Self.requestBuckets,
            "pagoda:request_queue_time_seconds": Self.requestBuckets,
        ]
        factory = f
        if bootstrap { MetricsSystem.bootstrap(f) }
        running = MGauge(label: "pagoda:num_requests_running", factory: f)
        waiting = MGauge(label: "pagoda:num_requests_waiting", factory: f)
        kvUsage = MGauge(label: "pagoda:kv_cache_usage_perc", factory: f)
        prefixQueries = MCounter(label: "pagoda:prefix_cache_queries_total", factory: f)
        prefixHits = MCounter(label: "pagoda:prefix_cache_hits_total", factory: f)
        preemptions = MCounter(label: "pagoda:num_preemptions_total", factory: f)
        promptTokens = MCounter(label: "pagoda:prompt_tokens_total", factory: f)
        generationTokens = MCounter(label: "pagoda:generation_tokens_total", factory: f)
        ttft = MTimer(label: "pagoda:time_to_first_token_seconds", factory: f)
        itl = MTimer(label: "pagoda:inter_token_latency_seconds", factory: f)
        e2e = MTimer(label: "pagoda:e2e_request_latency_seconds", factory: f)
        queueTime = MTimer(label: "pagoda:request_queue_time_seconds", factory: f)
        for reason in ["stop", "length", "abort"] { _ = success(reason) }
    }

    func success(_ reason: String) -> MCounter {
        MCounter(label: "pagoda:request_success_total", dimensions: [("finished_reason", reason)], factory: factory)
    }

    func requestFinished(reason: String) { success(reason).increment() }

    static func seconds(_ s: Double) -> Int64 { Int64(max(0, s) * 1e9) }
    func recordTTFT(_ s: Double) { ttft.recordNanoseconds(Self.seconds(s)) }
    func recordITL(_ s: Double) { itl.recordNanoseconds(Self.seconds(s)) }
    func recordE2E(_ s: Double) { e2e.recordNanoseconds(Self.seconds(s)) }
    func recordQueue(_ s: Double) { queueTime.recordNanoseconds(Self.seconds(s)) }

    /// Copies the engine's statistics into the gauges and counters, then renders the exposition text.
    public func scrape(_ stats: EngineStats) -> String {
        running.record(stats.numRunning)
        waiting.record(stats.numWaiting)
        kvUsage.record(stats.kvCacheUsage)
        let totals: [(String, Int, MCounter)] = [
            ("pq", stats.prefixCacheQueries, prefixQueries), ("ph", stats.prefixCacheHits, prefixHits),
            ("pre", stats.numPreemptions, preemptions), ("pt", stats.promptTokensTotal, promptTokens),
            ("gt", stats.generationTokensTotal, generationTokens),
        ]
        last.withLock { last in
            for (key, total, counter) in totals {
                let delta = total - (last[key] ?? 0)
                if delta > 0 { counter.increment(by: delta) }
                last[key] = max(total, last[key] ?? 0)
            }
        }
        return registry.emitToString()
    }
}

/// A small lock-protected box.
public final class Locked<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    public init(_ v: T) { value = v }
    public func withLock<R>(_ body: (inout T) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
