import AsyncHTTPClient
import Foundation
import XCTest

/// End-to-end tests against one real `pagoda serve` process shared by the class.
final class ServerEndToEndTests: XCTestCase {
    nonisolated(unsafe) static var server: ServerProcess?
    nonisolated(unsafe) static var startError: Error?

    override class func setUp() {
        super.setUp()
        do { server = try ServerProcess() } catch { startError = error }
    }

    override class func tearDown() {
        if let s = server { XCTAssertEqual(s.stop(), 0, "pagoda serve must exit 0 on SIGTERM") }
        server = nil
        super.tearDown()
    }

    var base: String {
        get throws {
            if let e = Self.startError { throw e }
            return Self.server!.baseURL
        }
    }

    func completion(_ body: [String: Any]) async throws -> [String: Any] {
        var b = body
        b["model"] = b["model"] ?? "smollm2"
        let r = try await HTTP.post(try base + "/v1/completions", b)
        XCTAssertEqual(r.status, 200, r.text)
        return r.json
    }

    static func text(_ resp: [String: Any], choice: Int = 0) -> String {
        ((resp["choices"] as? [[String: Any]])?[choice]["text"] as? String) ?? ""
    }

    /// Concatenated `text` (completions) or `delta.content` (chat) of choice 0 from SSE events.
    static func streamedText(_ events: [[String: Any]], index: Int = 0) -> String {
        var s = ""
        for e in events {
            for c in (e["choices"] as? [[String: Any]]) ?? [] where (c["index"] as? Int) == index {
                if let t = c["text"] as? String { s += t }
                if let d = c["delta"] as? [String: Any], let t = d["content"] as? String { s += t }
            }
        }
        return s
    }

    // MARK: Basics

    func testHealthVersionModels() async throws {
        let h = try await HTTP.send(try base + "/health")
        XCTAssertEqual(h.status, 200)
        XCTAssertTrue(h.body.isEmpty)
        let v = try await HTTP.send(try base + "/version")
        XCTAssertNotNil(v.json["version"] as? String)
        let m = try await HTTP.send(try base + "/v1/models")
        XCTAssertEqual(m.json["object"] as? String, "list")
        let data = try XCTUnwrap(m.json["data"] as? [[String: Any]])
        XCTAssertEqual(data.first?["id"] as? String, "smollm2")
        XCTAssertEqual(data.first?["max_model_len"] as? Int, 2048)
    }

    func testTokenizeDetokenize() async throws {
        let t = try await HTTP.post(try base + "/tokenize", ["prompt": "Hello, world! héllo 日本"])
        XCTAssertEqual(t.status, 200, t.text)
        let tokens = try XCTUnwrap(t.json["tokens"] as? [Int])
        XCTAssertEqual(t.json["count"] as? Int, tokens.count)
        XCTAssertEqual(t.json["max_model_len"] as? Int, 2048)
        let d = try await HTTP.post(try base + "/detokenize", ["tokens": tokens])
        XCTAssertEqual(d.json["prompt"] as? String, "Hello, world! héllo 日本")
        let c = try await HTTP.post(try base + "/tokenize", ["messages": [["role": "user", "content": "Hi"]]])
        XCTAssertEqual(c.status, 200, c.text)
        XCTAssertGreaterThan(c.json["count"] as? Int ?? 0, 3)
    }

    func testCompletionShapeAndUsage() async throws {
        let r = try await completion(["prompt": "The capital of France is", "max_tokens": 8, "temperature": 0, "n": 2,
                                      "logprobs": 2, "return_token_ids": true])
        XCTAssertTrue((r["id"] as? String ?? "").hasPrefix("cmpl-"))
        XCTAssertEqual(r["object"] as? String, "text_completion")
        XCTAssertEqual(r["model"] as? String, "smollm2")
        XCTAssertNotNil(r["created"] as? Int)
        let choices = try XCTUnwrap(r["choices"] as? [[String: Any]])
        XCTAssertEqual(choices.count, 2)
        var completionTokens = 0
        for (i, c) in choices.enumerated() {
            XCTAssertEqual(c["index"] as? Int, i)
            let ids = try XCTUnwrap(c["token_ids"] as? [Int])
            completionTokens += ids.count
            XCTAssertFalse((c["prompt_token_ids"] as? [Int] ?? []).isEmpty)
            let lp = try XCTUnwrap(c["logprobs"] as? [String: Any])
            XCTAssertEqual((lp["tokens"] as? [Any])?.count, ids.count)
            XCTAssertEqual((lp["token_logprobs"] as? [Any])?.count, ids.count)
            XCTAssertEqual((lp["text_offset"] as? [Int])?.first, 0)
            XCTAssertEqual((lp["top_logprobs"] as? [[String: Any]])?.count, ids.count)
            XCTAssertNotNil(c["finish_reason"] as? String)
        }
        let usage = try XCTUnwrap(r["usage"] as? [String: Any])
        let promptTokens = (choices[0]["prompt_token_ids"] as? [Int])?.count
        XCTAssertEqual(usage["prompt_tokens"] as? Int, promptTokens)
        XCTAssertEqual(usage["completion_tokens"] as? Int, completionTokens)
        XCTAssertEqual(usage["total_tokens"] as? Int, completionTokens + (promptTokens ?? 0))
        // Greedy: both choices agree.
        XCTAssertEqual(Self.text(r, choice: 0), Self.text(r, choice: 1))
    }

    func testChatShapeAndLogprobs() async throws {
        let r = try await HTTP.post(try base + "/v1/chat/completions", [
            "model": "smollm2", "max_tokens": 8, "temperature": 0, "logprobs": true, "top_logprobs": 3,
            "messages": [["role": "system", "content": "You are terse."],
                         ["role": "user", "content": [["type": "text", "text": "Say hi."]]]],
        ])
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertTrue((r.json["id"] as? String ?? "").hasPrefix("chatcmpl-"))
        XCTAssertEqual(r.json["object"] as? String, "chat.completion")
        let choice = try XCTUnwrap((r.json["choices"] as? [[String: Any]])?.first)
        let msg = try XCTUnwrap(choice["message"] as? [String: Any])
        XCTAssertEqual(msg["role"] as? String, "assistant")
        let content = try XCTUnwrap((choice["logprobs"] as? [String: Any])?["content"] as? [[String: Any]])
        let usage = try XCTUnwrap(r.json["usage"] as? [String: Any])
        XCTAssertEqual(content.count, usage["completion_tokens"] as? Int)
        for e in content {
            XCTAssertNotNil(e["token"] as? String)
            XCTAssertNotNil(e["logprob"] as? Double)
            XCTAssertNotNil(e["bytes"] as? [Int])
            XCTAssertEqual((e["top_logprobs"] as? [[String: Any]])?.count, 3)
        }
    }

    // MARK: Streaming

    func testStreamingEqualsNonStreamed() async throws {
        let body: [String: Any] = ["model": "smollm2", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.9, "seed": 1234]
        let plain = try await completion(body)
        var sb = body
        sb["stream"] = true
        sb["stream_options"] = ["include_usage": true]
        let raw = try await HTTP.stream(try base + "/v1/completions", sb)
        XCTAssertEqual(raw.last, Array("[DONE]".utf8))
        let events = HTTP.jsonEvents(raw)
        XCTAssertEqual(Self.streamedText(events), Self.text(plain))
        for e in events { XCTAssertEqual(e["object"] as? String, "text_completion") }
        let last = try XCTUnwrap(events.last)
        XCTAssertEqual((last["choices"] as? [Any])?.count, 0)
        let usage = try XCTUnwrap(last["usage"] as? [String: Any])
        XCTAssertEqual(usage as NSDictionary, plain["usage"] as? NSDictionary)
        XCTAssertNotNil(events.dropLast().last.flatMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String })

        // Chat: same for the chat endpoint; the first chunk carries the role.
        let chat: [String: Any] = ["model": "smollm2", "messages": [["role": "user", "content": "Tell me a story."]],
                                   "max_tokens": 16, "temperature": 0.9, "seed": 99]
        let cp = try await HTTP.post(try base + "/v1/chat/completions", chat)
        let ctext = (((cp.json["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String)
        var cs = chat
        cs["stream"] = true
        let cevents = HTTP.jsonEvents(try await HTTP.stream(try base + "/v1/chat/completions", cs))
        XCTAssertEqual(Self.streamedText(cevents), ctext)
        let firstDelta = (cevents.first?["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any]
        XCTAssertEqual(firstDelta?["role"] as? String, "assistant")
        for e in cevents { XCTAssertEqual(e["object"] as? String, "chat.completion.chunk") }
        XCTAssertEqual((cevents.last?["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String,
                       (cp.json["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String)
    }

    func testDeltasNeverSplitMultibyteCharacters() async throws {
        // Prompts that push the model into emoji and CJK text, whose characters span several byte-level tokens.
        let prompts = ["🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉🎉", "日本語の文章：こんにちは、世界。今日は"]
        var sawMultibyte = false
        for p in prompts {
            let body: [String: Any] = ["model": "smollm2", "prompt": p, "max_tokens": 16, "temperature": 0, "stream": true]
            let raw = try await HTTP.stream(try base + "/v1/completions", body)
            for event in raw {
                XCTAssertNotNil(String(validating: event, as: UTF8.self), "event is not valid UTF-8")
            }
            var nb = body
            nb["stream"] = false
            let plain = Self.text(try await completion(nb))
            // The model may itself emit bytes that are not UTF-8 (a token starting a new character inside
            // another): those decode to U+FFFD in the plain text too. Any other replacement character in a
            // delta would be a character split across deltas.
            let invalidInPlain = plain.unicodeScalars.filter { $0 == "\u{FFFD}" }.count
            var replacementsInDeltas = 0
            for e in HTTP.jsonEvents(raw) {
                let choice = (e["choices"] as? [[String: Any]])?.first
                let t = choice?["text"] as? String ?? ""
                // Only the last delta of a sequence cut by max_tokens may end in a truncated character.
                if choice?["finish_reason"] as? String != "length" {
                    replacementsInDeltas += t.unicodeScalars.filter { $0 == "\u{FFFD}" }.count
                }
                if t.unicodeScalars.contains(where: { $0.value > 0x7F && $0 != "\u{FFFD}" }) { sawMultibyte = true }
            }
            XCTAssertLessThanOrEqual(replacementsInDeltas, invalidInPlain, "a delta holds a replacement character the full text does not")
            XCTAssertEqual(Self.streamedText(HTTP.jsonEvents(raw)), plain)
        }
        XCTAssertTrue(sawMultibyte, "no delta contained a multi-byte character; the test proved nothing")
    }

    func testConcurrentStreamsMatchSoloRuns() async throws {
        let base = try self.base
        let prompts = (0..<8).map { "Item \($0): a short fact about the number \($0 * 7 + 3) is" }
        @Sendable func body(_ p: String, stream: Bool) -> [String: Any] {
            ["model": "smollm2", "prompt": p, "max_tokens": 12, "temperature": 0, "stream": stream]
        }
        var solo: [String] = []
        for p in prompts { solo.append(Self.text(try await completion(body(p, stream: false)))) }
        let results = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for i in 0..<32 {
                group.addTask {
                    let events = HTTP.jsonEvents(try await HTTP.stream(base + "/v1/completions", body(prompts[i % 8], stream: true)))
                    return (i, Self.streamedText(events))
                }
            }
            var out: [Int: String] = [:]
            for try await (i, t) in group { out[i] = t }
            return out
        }
        XCTAssertEqual(results.count, 32)
        for i in 0..<32 { XCTAssertEqual(results[i], solo[i % 8], "request \(i) differs from its solo run") }
    }

    func testDisconnectedStreamsAreAborted() async throws {
        let base = try self.base
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    let body: [String: Any] = ["model": "smollm2", "prompt": "Write a very long essay about the sea.", "max_tokens": 1500,
                                               "ignore_eos": true, "stream": true]
                    _ = try await HTTP.stream(base + "/v1/completions", body, stopAfter: 2)
                }
            }
            try await group.waitForAll()
        }
        // Every request must be aborted at once: running and waiting drop to 0 and the KV cache empties.
        let deadline = Date().addingTimeInterval(20)
        var m: [String: Double] = [:]
        while Date() < deadline {
            m = try parsePrometheus(try await HTTP.send(base + "/metrics").text)
            if m["pagoda:num_requests_running"] == 0, m["pagoda:num_requests_waiting"] == 0, m["pagoda:kv_cache_usage_perc"] == 0 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        XCTAssertEqual(m["pagoda:num_requests_running"], 0)
        XCTAssertEqual(m["pagoda:num_requests_waiting"], 0)
        XCTAssertEqual(m["pagoda:kv_cache_usage_perc"], 0)
        XCTAssertGreaterThanOrEqual(m["pagoda:request_success_total{finished_reason=\"abort\"}"] ?? 0, 20)
        // The server still answers (the model may end at once, so look at the usage, not the text).
        let r = try await completion(["prompt": "Still alive?", "max_tokens": 4, "ignore_eos": true])
        XCTAssertEqual((r["usage"] as? [String: Any])?["completion_tokens"] as? Int, 4)
        XCTAssertEqual(((r["choices"] as? [[String: Any]])?.first?["finish_reason"]) as? String, "length")
    }

    func testMetricsParseAndMove() async throws {
        let before = try parsePrometheus(try await HTTP.send(try base + "/metrics").text)
        for name in ["pagoda:num_requests_running", "pagoda:num_requests_waiting", "pagoda:kv_cache_usage_perc",
                     "pagoda:time_to_first_token_seconds_count", "pagoda:e2e_request_latency_seconds_count",
                     "pagoda:inter_token_latency_seconds_count", "pagoda:request_queue_time_seconds_count"] {
            XCTAssertNotNil(before[name], "missing \(name)")
        }
        _ = try await completion(["prompt": "Count: one, two,", "max_tokens": 6, "ignore_eos": true, "temperature": 0])
        let res = try await HTTP.send(try base + "/metrics")
        XCTAssertTrue(res.header("content-type")?.hasPrefix("text/plain") ?? false)
        let after = try parsePrometheus(res.text)
        XCTAssertEqual((after["pagoda:generation_tokens_total"] ?? 0) - (before["pagoda:generation_tokens_total"] ?? 0), 6)
        XCTAssertGreaterThan(after["pagoda:prompt_tokens_total"] ?? 0, before["pagoda:prompt_tokens_total"] ?? 0)
        XCTAssertGreaterThan(after["pagoda:request_success_total{finished_reason=\"length\"}"] ?? 0,
                             before["pagoda:request_success_total{finished_reason=\"length\"}"] ?? 0)
        XCTAssertGreaterThan(after["pagoda:time_to_first_token_seconds_count"] ?? 0, before["pagoda:time_to_first_token_seconds_count"] ?? 0)
        XCTAssertGreaterThan(after["pagoda:e2e_request_latency_seconds_count"] ?? 0, before["pagoda:e2e_request_latency_seconds_count"] ?? 0)
    }

    func testStopAndSeed() async throws {
        let a = try await completion(["prompt": "1, 2, 3, 4,", "max_tokens": 16, "temperature": 0, "stop": [" 7"]])
        XCTAssertFalse(Self.text(a).contains(" 7"))
        let choice = (a["choices"] as? [[String: Any]])?.first
        if Self.text(a).contains("6") { XCTAssertEqual(choice?["finish_reason"] as? String, "stop") }
        let s1 = try await completion(["prompt": "Random words:", "max_tokens": 12, "temperature": 1.0, "seed": 7])
        let s2 = try await completion(["prompt": "Random words:", "max_tokens": 12, "temperature": 1.0, "seed": 7])
        XCTAssertEqual(Self.text(s1), Self.text(s2))
    }

    // MARK: Errors

    func testBadRequests() async throws {
        let base = try self.base
        let cases: [(path: String, body: String, status: Int, param: String?)] = [
            ("/v1/completions", "{not json", 400, nil),
            ("/v1/completions", "[1,2]", 400, nil),
            ("/v1/completions", #"{"model":"smollm2"}"#, 400, "prompt"),
            ("/v1/completions", #"{"model":"smollm2","prompt":"hi","max_tokens":"ten"}"#, 400, "max_tokens"),
            ("/v1/completions", #"{"model":"smollm2","prompt":"hi","n":0}"#, 400, "n"),
            ("/v1/completions", #"{"model":"smollm2","prompt":"hi","temperature":-1}"#, 400, "temperature"),
            ("/v1/completions", #"{"model":"smollm2","prompt":"hi","max_tokens":5000}"#, 400, "max_tokens"),
            ("/v1/completions", #"{"model":"smollm2","prompt":"hi","logit_bias":{"abc":1}}"#, 400, "logit_bias"),
            ("/v1/completions", #"{"model":"smollm2","prompt":[1,2,999999]}"#, 400, "prompt"),
            ("/v1/completions", #"{"model":"smollm2","prompt":{"a":1}}"#, 400, "prompt"),
            ("/v1/completions", #"{"model":"smollm2","prompt":"hi","stream":"yes"}"#, 400, "stream"),
            ("/v1/completions", #"{"model":"nope","prompt":"hi"}"#, 404, "model"),
            ("/v1/completions", "{\"model\":\"smollm2\",\"prompt\":\"" + String(repeating: "hello ", count: 2100) + "\"}", 400, "prompt"),
            ("/v1/chat/completions", #"{"model":"smollm2"}"#, 400, "messages"),
            ("/v1/chat/completions", #"{"model":"smollm2","messages":[]}"#, 400, "messages"),
            ("/v1/chat/completions", #"{"model":"smollm2","messages":[{"role":"wizard","content":"x"}]}"#, 400, "messages[0].role"),
            ("/v1/chat/completions", #"{"model":"smollm2","messages":[{"role":"user","content":5}]}"#, 400, "messages[0].content"),
            ("/v1/chat/completions", #"{"model":"smollm2","messages":[{"role":"user","content":"x"}],"top_logprobs":50,"logprobs":true}"#, 400, "top_logprobs"),
            ("/detokenize", #"{"tokens":"abc"}"#, 400, "tokens"),
        ]
        for c in cases {
            let r = try await HTTP.send(base + c.path, method: .POST, body: c.body)
            XCTAssertEqual(r.status, c.status, "\(c.path) \(c.body.prefix(80)): \(r.text)")
            let err = try XCTUnwrap(r.json["error"] as? [String: Any], "no error object for \(c.body.prefix(80)): \(r.text)")
            XCTAssertNotNil(err["message"] as? String)
            XCTAssertEqual(err["type"] as? String, c.status == 404 ? "not_found_error" : "invalid_request_error")
            XCTAssertTrue(err.keys.contains("code") && err.keys.contains("param"))
            if let p = c.param { XCTAssertEqual(err["param"] as? String, p, "\(c.body.prefix(80))") }
        }
        let missing = try await HTTP.send(base + "/v1/nothing")
        XCTAssertEqual(missing.status, 404)
    }
}
