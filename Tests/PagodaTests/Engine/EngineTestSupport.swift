import Foundation
@testable import Pagoda

enum EngineFixtures {
    /// The tiny random-weight Qwen2 checkpoint (SmolLM2's tokenizer): cheap enough for many engine runs.
    static let tiny: LoadedModel = try! ModelLoader.load(path: Golden.url("archs/qwen2").path)
    /// The default model.
    static let smol: LoadedModel = try! ModelLoader.load(path: Golden.defaultModelPath)

    static func config(blocks: Int? = nil, budget: Int = 2048, maxSeqs: Int = 64, prefixCaching: Bool = true) -> EngineConfig {
        var c = EngineConfig()
        c.numKVBlocks = blocks ?? 512
        c.maxNumBatchedTokens = budget
        c.maxNumSeqs = maxSeqs
        c.enablePrefixCaching = prefixCaching
        c.maxModelLen = 2048
        return c
    }

    static func llm(_ model: LoadedModel, _ config: EngineConfig) -> LLM {
        try! LLM(loaded: model, config: config, pool: TestModels.pool)
    }

    /// Deterministic pseudo-random prompts of ordinary tokens (ids 100..<40000).
    static func prompt(length: Int, seed: UInt64) -> [Int] {
        var rng = Xoshiro256(seed: seed)
        return (0..<length).map { _ in 100 + Int(rng.next() % 39_900) }
    }

    static func greedy(_ maxTokens: Int, logprobs: Int? = nil) -> SamplingParams {
        var p = SamplingParams.greedy
        p.maxTokens = maxTokens
        p.logprobs = logprobs
        return p
    }
}
