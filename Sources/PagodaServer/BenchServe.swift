import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Pagoda

/// `pagoda bench serve`: a load generator like `vllm bench serve`, over streamed completions.
public struct BenchServeOptions: Sendable {
    public var url = "http://127.0.0.1:8000"
    public var model: String?
    public var apiKey: String?
    public var numPrompts = 64
    public var maxConcurrency: Int? = 16
    public var requestRate: Double?
    public var randomInputLen = 128
    public var randomOutputLen = 64
    public var sharedPrefixLen = 0
    public var seed: UInt64 = 0
    public init() {}
}

public struct BenchRequestResult: Sendable {
    public var ok = false
    public var error: String?
    public var promptTokens = 0
    public var outputTokens = 0
    public var ttft = 0.0
    public var latency = 0.0
    public var itls: [Double] = []
}

public struct BenchSummary: Sendable {
    public var completed = 0, failed = 0
    public var duration = 0.0
    public var totalInput = 0, totalOutput = 0
    public var ttft: [Double] = [], tpot: [Double] = [], itl: [Double] = [], e2e: [Double] = []

    static func stats(_ xs: [Double]) -> (mean: Double, median: Double, p99: Double) {
        guard !xs.isEmpty else { return (0, 0, 0) }
        let s = xs.sorted()
        func pct(_ p: Double) -> Double {
            let r = p / 100 * Double(s.count - 1)
            let lo = Int(r.rounded(.down)), hi = Int(r.rounded(.up))
            return s[lo] + (s[hi] - s[lo]) * (r - Double(lo))
        }
        return (s.reduce(0, +) / Double(s.count), pct(50), pct(99))
    }

    public var json: JinjaValue {
        var o: [(String, JinjaValue)] = [
            ("completed", .int(completed)), ("failed", .int(failed)), ("duration", .double(duration)),
            ("total_input_tokens", .int(totalInput)), ("total_output_tokens", .int(totalOutput)),
            ("request_throughput", .double(Double(completed) / max(duration, 1e-9))),
            ("output_throughput", .double(Double(totalOutput) / max(duration, 1e-9))),
            ("total_token_throughput", .double(Double(totalInput + totalOutput) / max(duration, 1e-9))),
        ]
        for (name, xs) in [("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2e)] {
            let s = Self.stats(xs)
            o += [("mean_\(name)_ms", .double(s.mean * 1000)), ("median_\(name)_ms", .double(s.median * 1000)),
                  ("p99_\(name)_ms", .double(s.p99 * 1000))]
        }
        return .object(JinjaObject(o))
    }

    public var table: String {
        func line(_ k: String, _ v: String) -> String { k.padding(toLength: 40, withPad: " ", startingAt: 0) + v + "\n" }
        func f(_ x: Double) -> String { String(format: "%.2f", x) }
        var s = "============ Serving Benchmark Result ============\n"
        s += line("Successful requests:", "\(completed)")
        s += line("Failed requests:", "\(failed)")
        s += line("Benchmark duration (s):", f(duration))
        s += line("Total input tokens:", "\(totalInput)")
        s += line("Total generated tokens:", "\(totalOutput)")
        s += line("Request throughput (req/s):", f(Double(completed) / max(duration, 1e-9)))
        s += line("Output token throughput (tok/s):", f(Double(totalOutput) / max(duration, 1e-9)))
        s += line("Total token throughput (tok/s):", f(Double(totalInput + totalOutput) / max(duration, 1e-9)))
        for (title, name, xs) in [("Time to First Token", "TTFT", ttft), ("Time per Output Token (excl. 1st token)", "TPOT", tpot),
                                  ("Inter-token Latency", "ITL", itl), ("End-to-end Latency", "E2EL", e2e)] {
            let st = Self.stats(xs)
            s += "-" + title.padding(toLength: 48, withPad: "-", startingAt: 0) + "\n"
            s += line("Mean \(name) (ms):", f(st.mean * 1000))
            s += line("Median \(name) (ms):", f(st.median * 1000))
            s += line("P99 \(name) (ms):", f(st.p99 * 1000))
        }
        s += "=================================================="
        return s
    }
}

public enum BenchServe {
    struct SplitMix {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
    }

    /// Runs the load. Without `client`, a client of its own is made with room for one connection per request in
    /// flight (a shared client keeps at most 8 connections per host, which would queue requests in the client
    /// and count that wait as time to first token).
    public static func run(_ o: BenchServeOptions, client: HTTPClient? = nil, log: @Sendable (String) -> Void) async throws -> BenchSummary {
        if let client { return try await run(o, with: client, log: log) }
        var config = HTTPClient.Configuration()
        config.connectionPool = .init(idleTimeout: .seconds(60),
                                      concurrentHTTP1ConnectionsPerHostSoftLimit: max(8, o.maxConcurrency ?? o.numPrompts))
        let own = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        do {
            let summary = try await run(o, with: own, log: log)
            try await own.shutdown()
            return summary
        } catch {
            try? await own.shutdown()
            throw error
        }
    }

    static func run(_ o: BenchServeOptions, with client: HTTPClient, log: @Sendable (String) -> Void) async throws -> BenchSummary {
        let base = o.url.hasSuffix("/") ? String(o.url.dropLast()) : o.url
        var model = o.model
        if model == nil {
            var req = HTTPClientRequest(url: base + "/v1/models")
            if let k = o.apiKey { req.headers.add(name: "Authorization", value: "Bearer \(k)") }
            let resp = try await client.execute(req, timeout: .seconds(30))
            let body = try await resp.body.collect(upTo: 1 << 20)
            let v = try JinjaValue.parseJSON(String(buffer: body))
            if case .array(let data)? = v["data"], let first = data.first, let id = first["id"]?.stringValue { model = id }
        }
        var rng = SplitMix(state: o.seed &+ 0x1234)
        // Random token ids from a range every common vocabulary covers.
        func randomIds(_ n: Int) -> [Int] { (0..<n).map { _ in 1000 + Int(rng.next() % 20000) } }
        let shared = randomIds(min(o.sharedPrefixLen, o.randomInputLen))
        let prompts = (0..<o.numPrompts).map { _ in shared + randomIds(max(1, o.randomInputLen - shared.count)) }
        var delays: [Double] = []
        if let rate = o.requestRate, rate > 0, rate.isFinite {
            var t = 0.0
            for _ in prompts { delays.append(t); t += -Foundation.log(max(1e-12, 1 - rng.uniform())) / rate }
        }
        log("Benchmarking \(prompts.count) prompts of \(o.randomInputLen) tokens (shared prefix \(shared.count)), \(o.randomOutputLen) output tokens, "
            + (o.requestRate.map { "request rate \($0)/s" } ?? "max concurrency \(o.maxConcurrency ?? prompts.count)"))
        let limit = max(1, o.maxConcurrency ?? prompts.count)
        let start = ContinuousClock.now
        let modelName = model, apiKey = o.apiKey, outLen = o.randomOutputLen
        let results = await withTaskGroup(of: BenchRequestResult.self) { group in
            var out: [BenchRequestResult] = []
            var inFlight = 0
            for (i, p) in prompts.enumerated() {
                if inFlight >= limit, let r = await group.next() { out.append(r); inFlight -= 1 }
                if !delays.isEmpty {
                    let wait = delays[i] - Self.seconds(ContinuousClock.now - start)
                    if wait > 0 { try? await Task.sleep(for: .milliseconds(Int(wait * 1000))) }
                }
                group.addTask { await one(client: client, base: base, model: modelName, apiKey: apiKey, prompt: p, maxTokens: outLen) }
                inFlight += 1
            }
            for await r in group { out.append(r) }
            return out
        }
        var s = BenchSummary()
        s.duration = seconds(ContinuousClock.now - start)
        for r in results {
            guard r.ok else { s.failed += 1; if let e = r.error { log("request failed: \(e)") }; continue }
            s.completed += 1
            s.totalInput += r.promptTokens
            s.totalOutput += r.outputTokens
            s.ttft.append(r.ttft)
            s.e2e.append(r.latency)
            s.itl += r.itls
            if r.outputTokens > 1 { s.tpot.append((r.latency - r.ttft) / Double(r.outputTokens - 1)) }
        }
        return s
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    static func one(client: HTTPClient, base: String, model: String?, apiKey: String?, prompt: [Int], maxTokens: Int) async -> BenchRequestResult {
        var result = BenchRequestResult()
        result.promptTokens = prompt.count
        var req = HTTPClientRequest(url: base + "/v1/completions")
        req.method = .POST
        req.headers.add(name: "Content-Type", value: "application/json")
        if let k = apiKey { req.headers.add(name: "Authorization", value: "Bearer \(k)") }
        var body: [(String, JinjaValue)] = [("prompt", .array(prompt.map { .int($0) })), ("max_tokens", .int(maxTokens)),
                                            ("ignore_eos", true), ("temperature", 0), ("stream", true),
                                            ("stream_options", ["include_usage": true])]
        if let model { body.insert(("model", .string(model)), at: 0) }
        req.body = .bytes(ByteBuffer(string: JinjaValue.object(JinjaObject(body)).jsonText()))
        let start = ContinuousClock.now
        // A pooled keep-alive connection the server has just closed fails before any byte of the response:
        // such a request was never served, so it is sent again (its time to first token keeps the lost time).
        for attempt in 1...3 {
            result = BenchRequestResult()
            result.promptTokens = prompt.count
            await send(client: client, req, start: start, into: &result)
            guard !result.ok, result.ttft == 0, result.error?.contains("remoteConnectionClosed") == true, attempt < 3 else { break }
        }
        return result
    }

    static func send(client: HTTPClient, _ req: HTTPClientRequest, start: ContinuousClock.Instant,
                     into result: inout BenchRequestResult) async {
        do {
            let resp = try await client.execute(req, timeout: .seconds(3600))
            guard resp.status == .ok else {
                let b = try await resp.body.collect(upTo: 1 << 20)
                result.error = "HTTP \(resp.status.code): \(String(buffer: b))"
                return
            }
            var pending = ""
            var last: ContinuousClock.Instant?
            var chunks = 0
            for try await buf in resp.body {
                pending += String(buffer: buf)
                while let r = pending.range(of: "\n\n") {
                    let event = String(pending[..<r.lowerBound])
                    pending.removeSubrange(..<r.upperBound)
                    guard event.hasPrefix("data: ") else { continue }
                    let data = event.dropFirst(6)
                    if data == "[DONE]" { continue }
                    guard let v = try? JinjaValue.parseJSON(String(data)) else { continue }
                    if case .int(let c)? = v["usage"]?["completion_tokens"] { result.outputTokens = c }
                    if case .array(let choices)? = v["choices"], let ch = choices.first, let t = ch["text"]?.stringValue, !t.isEmpty {
                        let now = ContinuousClock.now
                        if let last { result.itls.append(seconds(now - last)) } else { result.ttft = seconds(now - start) }
                        last = now
                        chunks += 1
                    }
                }
            }
            result.latency = seconds(ContinuousClock.now - start)
            if result.outputTokens == 0 { result.outputTokens = chunks }
            result.ok = true
        } catch {
            result.error = "\(error)"
        }
    }
}
