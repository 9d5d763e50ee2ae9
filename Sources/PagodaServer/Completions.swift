import Foundation
import Hummingbird
import NIOCore
import Pagoda

extension OpenAIService {
    /// Checks the sampling parameters before the prompt is looked at (max_tokens is checked against the prompt later).
    func validate(_ opts: GenerationOptions) throws {
        var p = opts.params
        p.maxTokens = max(1, opts.explicitMaxTokens ?? engine.maxModelLen)
        if let e = p.validationError() { throw APIError.invalid(e.message, param: e.param) }
    }

    // MARK: /v1/completions

    func completions(_ body: JSONBody) async throws -> Response {
        try checkModel(body)
        let opts = try body.generationOptions(chat: false, vocabSize: engine.tokenizer.vocabSize)
        try validate(opts)
        let prompts = try completionPrompts(body)
        let maxTokens = try prompts.map { try fitMaxTokens(opts, promptLength: $0.ids.count, param: "prompt") }
        let id = Self.requestId("cmpl-")
        let created = Int(Date().timeIntervalSince1970)
        let model = options.servedModelName
        let n = opts.params.n
        let streams = try submit(prompts: prompts.map(\.ids), baseId: id, opts: opts, maxTokens: maxTokens)
        logger.info("completion \(id): \(prompts.count) prompt(s), \(prompts.map(\.ids.count).reduce(0, +)) prompt tokens, n=\(n), max_tokens=\(maxTokens.max() ?? 0), stream=\(opts.stream)")
        let echoText = prompts.map { $0.text ?? engine.tokenizer.decode($0.ids, skipSpecialTokens: false) }

        if !opts.stream {
            var choices = [[Choice]](repeating: [Choice](repeating: Choice(), count: n), count: prompts.count)
            var promptLogprobs = [[TokenLogprob?]?](repeating: nil, count: prompts.count)
            let r = try await run(streams: streams, baseId: id, n: n) { i, o in
                guard o.index < n else { return }
                if let pl = o.promptLogprobs { promptLogprobs[i] = pl }
                choices[i][o.index].text += o.textDelta
                choices[i][o.index].tokenIds += o.newTokenIds
                choices[i][o.index].logprobs += o.logprobs
                if let f = o.finishReason { choices[i][o.index].finish = f; choices[i][o.index].stopReason = o.stopReason }
            }
            if !r.complete { throw CancellationError() }
            var out: [JinjaValue] = []
            var completionTokens = 0
            for (i, cs) in choices.enumerated() {
                for (k, c) in cs.enumerated() {
                    completionTokens += c.tokenIds.count
                    var text = c.text
                    var lpValue: JinjaValue = nil
                    if opts.logprobs != nil {
                        var offset = 0
                        var lps: [TokenLogprob?] = []
                        var ids: [Int] = []
                        if opts.echo {
                            let pl = promptLogprobs[i] ?? []
                            ids = prompts[i].ids
                            lps = ids.indices.map { $0 < pl.count ? pl[$0] : nil }
                        }
                        lps += c.logprobs.map { Optional($0) }
                        ids += c.tokenIds
                        lpValue = completionLogprobs(lps, ids: ids, offset: &offset)
                    }
                    if opts.echo { text = echoText[i] + text }
                    var choice: [(String, JinjaValue)] = [("index", .int(i * n + k)), ("text", .string(text)), ("logprobs", lpValue),
                                                          ("finish_reason", c.finish.map { .string($0.rawValue) } ?? nil),
                                                          ("stop_reason", c.stopReason.map { .string($0) } ?? nil)]
                    if opts.returnTokenIds {
                        choice.append(("prompt_token_ids", Self.ints(prompts[i].ids)))
                        choice.append(("token_ids", Self.ints(c.tokenIds)))
                    }
                    out.append(.object(JinjaObject(choice)))
                }
            }
            let promptTotal = prompts.map(\.ids.count).reduce(0, +)
            return Self.json(["id": .string(id), "object": "text_completion", "created": .int(created), "model": .string(model),
                              "choices": .array(out),
                              "usage": Self.usage(prompt: promptTotal, completion: completionTokens, cached: r.cached.reduce(0, +))])
        }

        return Self.sseResponse { [self] writer in
            var choices = [[Choice]](repeating: [Choice](repeating: Choice(), count: n), count: prompts.count)
            var completionTokens = 0
            let r = try await run(streams: streams, baseId: id, n: n) { i, o in
                guard o.index < n else { return }
                var c = choices[i][o.index]
                var text = o.textDelta
                var lps: [TokenLogprob?] = o.logprobs.map { Optional($0) }
                var ids = o.newTokenIds
                let first = !c.started
                if first && opts.echo {
                    text = echoText[i] + text
                    if opts.logprobs != nil {
                        let pl = o.promptLogprobs ?? []
                        lps = prompts[i].ids.indices.map { $0 < pl.count ? pl[$0] : nil } + lps
                        ids = prompts[i].ids + ids
                    }
                }
                c.started = true
                completionTokens += o.newTokenIds.count
                defer { choices[i][o.index] = c }
                if text.isEmpty && o.finishReason == nil && (opts.logprobs == nil || lps.isEmpty) && !opts.returnTokenIds { return }
                var lpValue: JinjaValue = nil
                if opts.logprobs != nil { lpValue = completionLogprobs(lps, ids: ids, offset: &c.offset) }
                var choice: [(String, JinjaValue)] = [("index", .int(i * n + o.index)), ("text", .string(text)), ("logprobs", lpValue),
                                                      ("finish_reason", o.finishReason.map { .string($0.rawValue) } ?? nil),
                                                      ("stop_reason", o.stopReason.map { .string($0) } ?? nil)]
                if opts.returnTokenIds {
                    if first { choice.append(("prompt_token_ids", Self.ints(prompts[i].ids))) }
                    choice.append(("token_ids", Self.ints(o.newTokenIds)))
                }
                try await writer.write(Self.event(["id": .string(id), "object": "text_completion", "created": .int(created),
                                                   "model": .string(model), "choices": [.object(JinjaObject(choice))]]))
            }
            guard r.complete else { return }
            if opts.includeUsage {
                let promptTotal = prompts.map(\.ids.count).reduce(0, +)
                try await writer.write(Self.event(["id": .string(id), "object": "text_completion", "created": .int(created),
                                                   "model": .string(model), "choices": [],
                                                   "usage": Self.usage(prompt: promptTotal, completion: completionTokens, cached: r.cached.reduce(0, +))]))
            }
            try await writer.write(Self.done)
            try await writer.finish(nil)
        }
    }

    // MARK: /v1/chat/completions

    func chatCompletions(_ body: JSONBody) async throws -> Response {
        try checkModel(body)
        let opts = try body.generationOptions(chat: true, vocabSize: engine.tokenizer.vocabSize)
        try validate(opts)
        let rendered = try renderChat(body)
        let promptIds = engine.tokenizer.encode(rendered, addSpecialTokens: try body.bool("add_special_tokens") ?? false, parseSpecial: true)
        let maxTokens = try fitMaxTokens(opts, promptLength: promptIds.count, param: "messages")
        let id = Self.requestId("chatcmpl-")
        let created = Int(Date().timeIntervalSince1970)
        let model = options.servedModelName
        let n = opts.params.n
        let topCount = opts.logprobs ?? 0
        let streams = try submit(prompts: [promptIds], baseId: id, opts: opts, maxTokens: [maxTokens])
        logger.info("chat completion \(id): \(promptIds.count) prompt tokens, n=\(n), max_tokens=\(maxTokens), stream=\(opts.stream)")

        if !opts.stream {
            var choices = [Choice](repeating: Choice(), count: n)
            let r = try await run(streams: streams, baseId: id, n: n) { _, o in
                guard o.index < n else { return }
                choices[o.index].text += o.textDelta
                choices[o.index].tokenIds += o.newTokenIds
                choices[o.index].logprobs += o.logprobs
                if let f = o.finishReason { choices[o.index].finish = f; choices[o.index].stopReason = o.stopReason }
            }
            if !r.complete { throw CancellationError() }
            let out: [JinjaValue] = choices.enumerated().map { k, c in
                var choice: [(String, JinjaValue)] = [
                    ("index", .int(k)),
                    ("message", ["role": "assistant", "content": .string(c.text), "refusal": nil, "tool_calls": []]),
                    ("logprobs", opts.logprobs != nil ? chatLogprobs(c.logprobs, topCount: topCount) : nil),
                    ("finish_reason", c.finish.map { .string($0.rawValue) } ?? nil),
                    ("stop_reason", c.stopReason.map { .string($0) } ?? nil)]
                if opts.returnTokenIds { choice.append(("token_ids", Self.ints(c.tokenIds))) }
                return .object(JinjaObject(choice))
            }
            var resp: [(String, JinjaValue)] = [("id", .string(id)), ("object", "chat.completion"), ("created", .int(created)),
                                                ("model", .string(model)), ("choices", .array(out)),
                                                ("usage", Self.usage(prompt: promptIds.count, completion: choices.map(\.tokenIds.count).reduce(0, +), cached: r.cached[0]))]
            if opts.returnTokenIds { resp.append(("prompt_token_ids", Self.ints(promptIds))) }
            return Self.json(.object(JinjaObject(resp)))
        }

        return Self.sseResponse { [self] writer in
            func chunk(_ choice: [(String, JinjaValue)], extra: [(String, JinjaValue)] = []) -> ByteBuffer {
                Self.event(.object(JinjaObject([("id", .string(id)), ("object", "chat.completion.chunk"), ("created", .int(created)),
                                                ("model", .string(model)), ("choices", [.object(JinjaObject(choice))])] + extra)))
            }
            for k in 0..<n {
                try await writer.write(chunk([("index", .int(k)), ("delta", ["role": "assistant", "content": ""]),
                                              ("logprobs", nil), ("finish_reason", nil)],
                                             extra: opts.returnTokenIds && k == 0 ? [("prompt_token_ids", Self.ints(promptIds))] : []))
            }
            var completionTokens = 0
            let r = try await run(streams: streams, baseId: id, n: n) { _, o in
                guard o.index < n else { return }
                completionTokens += o.newTokenIds.count
                if o.textDelta.isEmpty && o.finishReason == nil && (opts.logprobs == nil || o.logprobs.isEmpty) && !opts.returnTokenIds { return }
                var choice: [(String, JinjaValue)] = [
                    ("index", .int(o.index)),
                    ("delta", o.textDelta.isEmpty && o.finishReason != nil ? [:] : ["content": .string(o.textDelta)]),
                    ("logprobs", opts.logprobs != nil ? chatLogprobs(o.logprobs, topCount: topCount) : nil),
                    ("finish_reason", o.finishReason.map { .string($0.rawValue) } ?? nil)]
                if o.finishReason != nil { choice.append(("stop_reason", o.stopReason.map { .string($0) } ?? nil)) }
                if opts.returnTokenIds { choice.append(("token_ids", Self.ints(o.newTokenIds))) }
                try await writer.write(chunk(choice))
            }
            guard r.complete else { return }
            if opts.includeUsage {
                try await writer.write(Self.event(["id": .string(id), "object": "chat.completion.chunk", "created": .int(created),
                                                   "model": .string(model), "choices": [],
                                                   "usage": Self.usage(prompt: promptIds.count, completion: completionTokens, cached: r.cached[0])]))
            }
            try await writer.write(Self.done)
            try await writer.finish(nil)
        }
    }
}
