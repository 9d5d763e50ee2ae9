import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Pagoda

public struct ServerOptions: Sendable {
    public var host = "127.0.0.1"
    public var port = 8000
    public var servedModelName = "SmolLM2-135M-Instruct"
    public var modelPath = ""
    public var apiKey: String?
    /// Seconds that in-flight requests get to finish after SIGINT/SIGTERM before they are aborted.
    public var gracePeriod: Double = 30
    public static let version = "0.1.0"
    public init() {}
}

extension APIError: HTTPResponseError {
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: json.jsonText())))
    }
}

/// The OpenAI-compatible API on top of an engine.
public final class OpenAIService: Sendable {
    public let engine: any InferenceEngine
    public let options: ServerOptions
    public let metrics: ServerMetrics
    let logger: Logger
    let startTime = Int(Date().timeIntervalSince1970)

    public init(engine: any InferenceEngine, options: ServerOptions, metrics: ServerMetrics, logger: Logger) {
        self.engine = engine
        self.options = options
        self.metrics = metrics
        self.logger = logger
    }

    // MARK: Routing

    public func buildRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: RequestLogMiddleware(logger: logger))
        router.add(middleware: ErrorBodyMiddleware())
        if let key = options.apiKey { router.add(middleware: APIKeyMiddleware(key: key)) }
        router.get("/health") { _, _ -> Response in Response(status: .ok) }
        router.get("/version") { _, _ in Self.json(["version": .string(ServerOptions.version)]) }
        router.get("/v1/models") { [self] _, _ in Self.json(modelList()) }
        router.get("/v1/models/{id}") { [self] _, ctx in
            let id = ctx.parameters.get("id") ?? ""
            guard id == options.servedModelName else { throw APIError.notFound("The model '\(id)' does not exist.", param: "model") }
            guard case .object(let o) = modelList(), case .array(let d)? = o["data"], let first = d.first else { throw APIError.notFound("no model") }
            return Self.json(first)
        }
        router.get("/metrics") { [self] _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: metrics.scrape(engine.stats()))))
        }
        router.post("/tokenize") { [self] req, _ in try await tokenize(JSONBody(bytes: Self.body(req))) }
        router.post("/detokenize") { [self] req, _ in try await detokenize(JSONBody(bytes: Self.body(req))) }
        router.post("/v1/completions") { [self] req, _ in try await completions(JSONBody(bytes: Self.body(req))) }
        router.post("/v1/chat/completions") { [self] req, _ in try await chatCompletions(JSONBody(bytes: Self.body(req))) }
        return router
    }

    static let maxBodyBytes = 32 << 20

    static func body(_ req: Request) async throws -> [UInt8] {
        do {
            let buf = try await req.body.collect(upTo: maxBodyBytes)
            return Array(buffer: buf)
        } catch let e as HTTPError where e.status == .contentTooLarge {
            throw APIError(status: .contentTooLarge, message: "The request body exceeds \(maxBodyBytes) bytes.", type: "invalid_request_error")
        }
    }

    static func json(_ v: JinjaValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: v.jsonText())))
    }

    func modelList() -> JinjaValue {
        ["object": "list",
         "data": [["id": .string(options.servedModelName), "object": "model", "created": .int(startTime),
                   "owned_by": "pagoda", "root": .string(options.modelPath), "parent": nil,
                   "max_model_len": .int(engine.maxModelLen)]]]
    }

    func checkModel(_ body: JSONBody) throws {
        if let m = try body.string("model"), m != options.servedModelName {
            throw APIError.notFound("The model '\(m)' does not exist.", param: "model")
        }
    }

    // MARK: Tokenizer endpoints

    func tokenize(_ body: JSONBody) throws -> Response {
        try checkModel(body)
        let ids: [Int]
        if body.value("messages") != nil {
            let prompt = try renderChat(body)
            ids = engine.tokenizer.encode(prompt, addSpecialTokens: try body.bool("add_special_tokens") ?? false, parseSpecial: true)
        } else if let prompt = try body.string("prompt") {
            ids = engine.tokenizer.encode(prompt, addSpecialTokens: try body.bool("add_special_tokens") ?? true, parseSpecial: true)
        } else {
            throw APIError.invalid("Either 'prompt' or 'messages' is required.", param: "prompt")
        }
        var out: JinjaValue = ["count": .int(ids.count), "max_model_len": .int(engine.maxModelLen),
                               "tokens": .array(ids.map { .int($0) }), "token_strs": nil]
        if try body.bool("return_token_strs") ?? false, case .object(var o) = out {
            o["token_strs"] = .array(ids.map { .string(engine.tokenizer.tokenString($0)) })
            out = .object(o)
        }
        return Self.json(out)
    }

    func detokenize(_ body: JSONBody) throws -> Response {
        try checkModel(body)
        guard let ids = try body.intList("tokens") else { throw APIError.invalid("'tokens' is required.", param: "tokens") }
        try checkTokenIds(ids, param: "tokens")
        return Self.json(["prompt": .string(engine.tokenizer.decode(ids, skipSpecialTokens: false))])
    }

    func checkTokenIds(_ ids: [Int], param: String) throws {
        let v = engine.tokenizer.vocabSize
        if let bad = ids.first(where: { $0 < 0 || $0 >= v }) {
            throw APIError.invalid("Token id \(bad) is out of the vocabulary (0..<\(v)).", param: param)
        }
    }

    // MARK: Prompts

    /// Fixes max_tokens against the context length, throwing the errors OpenAI and vLLM give.
    func fitMaxTokens(_ opts: GenerationOptions, promptLength: Int, param: String) throws -> Int {
        let maxLen = engine.maxModelLen
        if promptLength == 0 { throw APIError.invalid("The prompt is empty.", param: param) }
        if promptLength >= maxLen {
            throw APIError.invalid("This model's maximum context length is \(maxLen) tokens. However, your request has \(promptLength) input tokens. Please reduce the length of the input.",
                                   param: param, code: "context_length_exceeded")
        }
        if let m = opts.explicitMaxTokens {
            if m < 1 { throw APIError.invalid("max_tokens must be at least 1, got \(m).", param: "max_tokens") }
            if promptLength + m > maxLen {
                throw APIError.invalid("This model's maximum context length is \(maxLen) tokens. However, you requested \(promptLength + m) tokens (\(promptLength) in the input, \(m) in the completion). Please reduce the length of the input or the completion.",
                                       param: "max_tokens", code: "context_length_exceeded")
            }
            return m
        }
        return maxLen - promptLength
    }

    func completionPrompts(_ body: JSONBody) throws -> [(ids: [Int], text: String?)] {
        guard let v = body.value("prompt") else { throw APIError.invalid("'prompt' is required.", param: "prompt") }
        let tok = engine.tokenizer
        func encode(_ s: String) -> (ids: [Int], text: String?) { (tok.encode(s, addSpecialTokens: true, parseSpecial: true), s) }
        let bad = JSONBody.wrongType("prompt", "a string, a list of strings, a list of token ids or a list of lists of token ids", v)
        switch v {
        case .string(let s): return [encode(s)]
        case .array(let items):
            if items.isEmpty { throw APIError.invalid("'prompt' must not be empty.", param: "prompt") }
            if items.allSatisfy({ if case .string = $0 { return true } else { return false } }) {
                return items.map { encode($0.stringValue!) }
            }
            if items.allSatisfy({ if case .int = $0 { return true } else { return false } }) {
                let ids = items.map { if case .int(let i) = $0 { return i } else { return 0 } }
                try checkTokenIds(ids, param: "prompt")
                return [(ids, nil)]
            }
            return try items.map { item in
                guard case .array(let inner) = item else { throw bad }
                let ids = try inner.map { x -> Int in
                    guard case .int(let i) = x else { throw bad }
                    return i
                }
                try checkTokenIds(ids, param: "prompt")
                return (ids, nil)
            }
        default: throw bad
        }
    }

    static let roles: Set<String> = ["system", "developer", "user", "assistant", "tool", "function"]

    /// Validates the messages and renders them with the model's chat template.
    func renderChat(_ body: JSONBody) throws -> String {
        guard let mv = body.value("messages") else { throw APIError.invalid("'messages' is required.", param: "messages") }
        guard case .array(let items) = mv else { throw JSONBody.wrongType("messages", "a list of messages", mv) }
        if items.isEmpty { throw APIError.invalid("'messages' must contain at least one message.", param: "messages") }
        var messages: [JinjaValue] = []
        for (i, item) in items.enumerated() {
            let param = "messages[\(i)]"
            guard case .object(var m) = item else { throw JSONBody.wrongType(param, "an object", item) }
            guard case .string(let role)? = m["role"] else { throw APIError.invalid("\(param).role is required and must be a string.", param: "\(param).role") }
            guard Self.roles.contains(role) else { throw APIError.invalid("\(param).role '\(role)' is not one of system, developer, user, assistant, tool.", param: "\(param).role") }
            switch m["content"] {
            case nil, .none?:
                if role != "assistant" { throw APIError.invalid("\(param).content is required for role '\(role)'.", param: "\(param).content") }
            case .string?: break
            case .array(let parts)?:
                var texts: [String] = []
                for (j, part) in parts.enumerated() {
                    guard case .object(let po) = part, case .string(let type)? = po["type"] else {
                        throw APIError.invalid("\(param).content[\(j)] must be an object with a 'type'.", param: "\(param).content")
                    }
                    guard type == "text" || type == "input_text", case .string(let t)? = po["text"] else {
                        throw APIError.invalid("\(param).content[\(j)]: only text parts ({\"type\": \"text\", \"text\": ...}) are supported, got '\(type)'.", param: "\(param).content")
                    }
                    texts.append(t)
                }
                m["content"] = .string(texts.joined(separator: "\n"))
            case let other?: throw JSONBody.wrongType("\(param).content", "a string or a list of content parts", other)
            }
            // Templates expect tool-call arguments as objects; OpenAI sends them as JSON text.
            if case .array(let calls)? = m["tool_calls"] {
                m["tool_calls"] = .array(calls.map { call in
                    guard case .object(var c) = call, case .object(var f)? = c["function"],
                          case .string(let args)? = f["arguments"], let parsed = try? JinjaValue.parseJSON(args) else { return call }
                    f["arguments"] = parsed
                    c["function"] = .object(f)
                    return .object(c)
                })
            }
            messages.append(.object(m))
        }
        var tools: [JinjaValue]?
        if let tv = body.value("tools") {
            guard case .array(let t) = tv else { throw JSONBody.wrongType("tools", "a list of tools", tv) }
            tools = t.isEmpty ? nil : t
        }
        let addGenerationPrompt = try body.bool("add_generation_prompt") ?? true
        let continueFinal = try body.bool("continue_final_message") ?? false
        var extra: [String: JinjaValue] = [:]
        if let kv = body.value("chat_template_kwargs") {
            guard case .object(let o) = kv else { throw JSONBody.wrongType("chat_template_kwargs", "an object", kv) }
            for (k, v) in o.pairs { extra[k] = v }
        }
        var rendered: String
        if let template = engine.chatTemplate {
            do {
                rendered = try template.render(messages: messages, tools: tools, addGenerationPrompt: addGenerationPrompt && !continueFinal,
                                               bosToken: engine.bosToken, eosToken: engine.eosToken, extra: extra)
            } catch {
                throw APIError.invalid("The chat template failed to render the messages: \(error)", param: "messages")
            }
        } else {
            // ChatML, for models that ship no template.
            rendered = messages.map { m in "<|im_start|>\(m["role"]?.stringValue ?? "user")\n\(m["content"]?.stringValue ?? "")<|im_end|>\n" }.joined()
            if addGenerationPrompt && !continueFinal { rendered += "<|im_start|>assistant\n" }
        }
        if continueFinal, case .object(let last)? = messages.last, let content = last["content"]?.stringValue, !content.isEmpty,
           let r = rendered.range(of: content, options: .backwards) {
            rendered = String(rendered[..<r.upperBound])
        }
        return rendered
    }

    // MARK: Generation plumbing

    static func requestId(_ prefix: String) -> String {
        prefix + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
    }

    /// Submits one engine request per prompt; on a synchronous failure aborts the ones already submitted.
    func submit(prompts: [[Int]], baseId: String, opts: GenerationOptions, maxTokens: [Int]) throws -> [AsyncStream<RequestOutput>] {
        var streams: [AsyncStream<RequestOutput>] = []
        for (i, ids) in prompts.enumerated() {
            var p = opts.params
            p.maxTokens = maxTokens[i]
            if let e = p.validationError() {
                for j in 0..<i { engine.abort(requestId: subId(baseId, j, prompts.count)) }
                throw APIError.invalid(e.message, param: e.param)
            }
            do {
                streams.append(try engine.generate(EngineRequest(id: subId(baseId, i, prompts.count), promptTokenIds: ids, params: p, priority: opts.priority)))
            } catch {
                for j in 0..<i { engine.abort(requestId: subId(baseId, j, prompts.count)) }
                throw APIError.from(engine: error)
            }
        }
        return streams
    }

    func subId(_ base: String, _ i: Int, _ count: Int) -> String { count == 1 ? base : "\(base)-\(i)" }

    /// Per-choice state while a request runs.
    struct Choice {
        var text = ""
        var tokenIds: [Int] = []
        var logprobs: [TokenLogprob] = []
        var finish: FinishReason?
        var stopReason: String?
        var started = false
        var lastTime: Double = 0
        /// Characters (code points) emitted so far, for text_offset.
        var offset = 0
    }

    /// Merges the engine streams, records metrics, and calls `body` for every output with its prompt index.
    /// Aborts every unfinished request when `body` throws or the task is cancelled.
    func run(streams: [AsyncStream<RequestOutput>], baseId: String, n: Int,
             _ body: (_ prompt: Int, _ output: RequestOutput) async throws -> Void) async throws -> (prompt: [Int], cached: [Int], complete: Bool) {
        let start = ProcessInfo.processInfo.systemUptime
        let count = streams.count
        let (merged, cont) = AsyncStream<(Int, RequestOutput)>.makeStream()
        let feeder = Task {
            await withTaskGroup(of: Void.self) { group in
                for (i, s) in streams.enumerated() {
                    group.addTask { for await o in s { cont.yield((i, o)) } }
                }
            }
            cont.finish()
        }
        var promptTokens = [Int](repeating: 0, count: count)
        var cached = [Int](repeating: 0, count: count)
        var firstToken = [Double?](repeating: nil, count: count)
        var lastTime = [[Double]](repeating: [Double](repeating: 0, count: n), count: count)
        var finished = [[Bool]](repeating: [Bool](repeating: false, count: n), count: count)
        var remaining = count * n
        defer {
            if remaining > 0 {
                for i in 0..<count where finished[i].contains(false) { engine.abort(requestId: subId(baseId, i, count)) }
                feeder.cancel()
                for _ in 0..<remaining { metrics.requestFinished(reason: "abort") }
            }
        }
        for await (i, o) in merged {
            let now = ProcessInfo.processInfo.systemUptime
            promptTokens[i] = o.promptTokenCount
            cached[i] = max(cached[i], o.numCachedTokens)
            if !o.newTokenIds.isEmpty, o.index < n {
                if firstToken[i] == nil {
                    firstToken[i] = now
                    metrics.recordTTFT(now - start)
                } else if lastTime[i][o.index] > 0 {
                    metrics.recordITL((now - lastTime[i][o.index]) / Double(o.newTokenIds.count))
                }
                lastTime[i][o.index] = now
            }
            try await body(i, o)
            if let reason = o.finishReason, o.index < n, !finished[i][o.index] {
                finished[i][o.index] = true
                remaining -= 1
                metrics.requestFinished(reason: reason.rawValue)
                if !finished[i].contains(false) {
                    if let m = o.metrics {
                        metrics.recordE2E(m.finished - m.arrival)
                        if let s = m.firstScheduled { metrics.recordQueue(s - m.arrival) }
                    } else {
                        metrics.recordE2E(now - start)
                    }
                }
            }
            if remaining == 0 { break }
            try Task.checkCancellation()
        }
        feeder.cancel()
        return (promptTokens, cached, remaining == 0)
    }

    // MARK: Logprobs formatting

    func tokenText(_ id: Int) -> String { engine.tokenizer.decode([id], skipSpecialTokens: false) }

    /// Completions' `{tokens, token_logprobs, top_logprobs, text_offset}`.
    func completionLogprobs(_ lps: [TokenLogprob?], ids: [Int], offset: inout Int) -> JinjaValue {
        var tokens: [JinjaValue] = [], values: [JinjaValue] = [], tops: [JinjaValue] = [], offsets: [JinjaValue] = []
        for (k, lp) in lps.enumerated() {
            let id = lp?.token ?? ids[k]
            let text = tokenText(id)
            tokens.append(.string(text))
            offsets.append(.int(offset))
            offset += text.unicodeScalars.count
            if let lp {
                values.append(.double(Double(lp.logprob)))
                var top = JinjaObject()
                for (t, l) in lp.top { top[tokenText(t)] = .double(Double(l)) }
                if top[text] == nil { top[text] = .double(Double(lp.logprob)) }
                tops.append(.object(top))
            } else {
                values.append(nil)
                tops.append(nil)
            }
        }
        return ["tokens": .array(tokens), "token_logprobs": .array(values), "top_logprobs": .array(tops), "text_offset": .array(offsets)]
    }

    /// Chat's `{content: [{token, logprob, bytes, top_logprobs}]}`.
    func chatLogprobs(_ lps: [TokenLogprob], topCount: Int) -> JinjaValue {
        func entry(_ id: Int, _ lp: Float) -> [(String, JinjaValue)] {
            let bytes = engine.tokenizer.tokenBytes(id)
            return [("token", .string(String(decoding: bytes, as: UTF8.self))), ("logprob", .double(Double(lp))),
                    ("bytes", .array(bytes.map { .int(Int($0)) }))]
        }
        let content: [JinjaValue] = lps.map { lp in
            var e = entry(lp.token, lp.logprob)
            e.append(("top_logprobs", .array(lp.top.prefix(topCount).map { .object(JinjaObject(entry($0.0, $0.1))) })))
            return .object(JinjaObject(e))
        }
        return ["content": .array(content), "refusal": nil]
    }

    static func usage(prompt: Int, completion: Int, cached: Int) -> JinjaValue {
        var u: JinjaValue = ["prompt_tokens": .int(prompt), "total_tokens": .int(prompt + completion), "completion_tokens": .int(completion)]
        if cached > 0, case .object(var o) = u {
            o["prompt_tokens_details"] = ["cached_tokens": .int(cached)]
            u = .object(o)
        }
        return u
    }

    static func ints(_ a: [Int]) -> JinjaValue { .array(a.map { .int($0) }) }

    // MARK: SSE

    static func sseResponse(_ write: @escaping @Sendable (inout any ResponseBodyWriter) async throws -> Void) -> Response {
        Response(status: .ok,
                 headers: [.contentType: "text/event-stream; charset=utf-8", .cacheControl: "no-cache", .connection: "keep-alive"],
                 body: ResponseBody(write))
    }

    static func event(_ v: JinjaValue) -> ByteBuffer { ByteBuffer(string: "data: " + v.jsonText() + "\n\n") }
    static let done = ByteBuffer(string: "data: [DONE]\n\n")
}
