/// One finished choice of an offline generation.
public struct CompletionOutput: Sendable {
    public var index: Int
    public var tokenIds: [Int]
    public var text: String
    public var logprobs: [TokenLogprob]
    public var finishReason: FinishReason?
    public var stopReason: String?
}

/// The result of one prompt of an offline generation.
public struct GenerationResult: Sendable {
    public var promptTokenIds: [Int]
    public var outputs: [CompletionOutput]
    public var promptLogprobs: [TokenLogprob?]?
    public var numCachedTokens: Int
    public var metrics: [RequestMetrics]
}

/// The offline batch API, as vLLM's `LLM`: give it all prompts, it runs them through the continuous-batching
/// engine in the calling thread and returns every result in prompt order.
public final class LLM {
    public let engine: EngineCore
    private var counter = 0

    public init(model path: String, config: EngineConfig = EngineConfig()) throws {
        engine = try EngineCore(loaded: ModelLoader.load(path: path), config: config)
    }

    public init(loaded: LoadedModel, config: EngineConfig = EngineConfig(), pool: ThreadPool? = nil) throws {
        engine = try EngineCore(loaded: loaded, config: config, pool: pool)
    }

    public var tokenizer: Tokenizer { engine.loaded.tokenizer }

    /// Generates for text prompts (tokenized without added special tokens unless the model adds BOS).
    public func generate(_ prompts: [String], _ params: SamplingParams) throws -> [GenerationResult] {
        let tok = tokenizer
        return try generate(promptTokenIds: prompts.map { tok.encode($0, addSpecialTokens: tok.addBOS) }, params)
    }

    /// Generates for token-id prompts; `params` may hold one entry for all prompts or one per prompt.
    public func generate(promptTokenIds: [[Int]], _ params: SamplingParams, priorities: [Int]? = nil) throws -> [GenerationResult] {
        try generate(promptTokenIds: promptTokenIds, params: Array(repeating: params, count: promptTokenIds.count), priorities: priorities)
    }

    public func generate(promptTokenIds: [[Int]], params: [SamplingParams], priorities: [Int]? = nil) throws -> [GenerationResult] {
        precondition(params.count == promptTokenIds.count, "one SamplingParams per prompt")
        var ids: [String] = []
        var results: [String: GenerationResult] = [:]
        for (i, prompt) in promptTokenIds.enumerated() {
            let id = "llm-\(counter)"
            counter += 1
            try engine.add(EngineRequest(id: id, promptTokenIds: prompt, params: params[i], priority: priorities?[i] ?? 0))
            ids.append(id)
            results[id] = GenerationResult(
                promptTokenIds: prompt,
                outputs: (0..<params[i].n).map { CompletionOutput(index: $0, tokenIds: [], text: "", logprobs: []) },
                promptLogprobs: nil, numCachedTokens: 0, metrics: [])
        }
        while engine.hasWork {
            for o in engine.step() {
                guard var res = results[o.requestId] else { continue }
                res.outputs[o.index].tokenIds += o.newTokenIds
                res.outputs[o.index].text += o.textDelta
                res.outputs[o.index].logprobs += o.logprobs
                if let f = o.finishReason {
                    res.outputs[o.index].finishReason = f
                    res.outputs[o.index].stopReason = o.stopReason
                }
                if let pl = o.promptLogprobs { res.promptLogprobs = pl }
                if let m = o.metrics { res.metrics.append(m) }
                res.numCachedTokens = o.numCachedTokens
                results[o.requestId] = res
            }
        }
        return ids.map { results[$0]! }
    }
}
