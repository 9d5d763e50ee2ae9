import Foundation
import XCTest
@testable import Pagoda

final class PrefixCacheTests: XCTestCase {
    /// A second request sharing a 500-token prefix computes only its new tokens, and its output is unchanged.
    func testSharedPrefixIsNotRecomputed() throws {
        let model = EngineFixtures.smol
        let prefix = EngineFixtures.prompt(length: 500, seed: 7)
        let a = prefix + EngineFixtures.prompt(length: 20, seed: 8)
        let b = prefix + EngineFixtures.prompt(length: 30, seed: 9)
        let params = EngineFixtures.greedy(5, logprobs: 2)
        let llm = EngineFixtures.llm(model, EngineFixtures.config())
        _ = try llm.generate(promptTokenIds: [a], params)
        let before = llm.engine.runner.computedTokens
        let cached = try llm.generate(promptTokenIds: [b], params)[0]
        let computed = llm.engine.runner.computedTokens - before
        // 500 shared tokens = 31 full blocks of 16 (496 tokens) reused.
        XCTAssertEqual(cached.numCachedTokens, 496)
        XCTAssertEqual(computed, b.count - 496 + 4, "prompt tokens after the cached blocks plus 4 decode steps")
        XCTAssertGreaterThan(llm.engine.scheduler.prefixHitTokens, 0)

        let uncached = try EngineFixtures.llm(model, EngineFixtures.config(prefixCaching: false)).generate(promptTokenIds: [b], params)[0]
        XCTAssertEqual(cached.outputs[0].tokenIds, uncached.outputs[0].tokenIds)
        XCTAssertEqual(cached.outputs[0].logprobs, uncached.outputs[0].logprobs)
    }

    func testPrefixCachingOffComputesEverything() throws {
        let llm = EngineFixtures.llm(EngineFixtures.tiny, EngineFixtures.config(prefixCaching: false))
        let p = EngineFixtures.prompt(length: 64, seed: 1)
        _ = try llm.generate(promptTokenIds: [p, p], EngineFixtures.greedy(1))
        XCTAssertEqual(llm.engine.runner.computedTokens, 128)
        XCTAssertEqual(llm.engine.scheduler.prefixHitTokens, 0)
    }
}

/// The wide product computes prompt tokens (`LlamaModel.wideTokenCount`), the int8 kernels generated ones: a
/// block's cached keys and values depend on which computed it, so that is part of its prefix-cache key.
final class WidePrefixCacheTests: XCTestCase {
    func testBlockKeysCountWideTokens() {
        var kv = KVCacheManager(blockCount: 8, blockSize: 4, enablePrefixCaching: true)
        func request(_ id: String, wide: Int) -> Request {
            let r = Request(id: id, promptTokenIds: Array(100..<110), params: SamplingParams(), priority: 0, arrival: 0,
                            rng: Xoshiro256(seed: 1), arrivalTime: 0)
            r.wideTokenCount = wide
            return r
        }
        let none = request("a", wide: 0), all = request("b", wide: 10), again = request("c", wide: 10)
        for r in [none, all, again] { _ = kv.cachedPrefix(r) }
        XCTAssertEqual(all.blockHashes, again.blockHashes)
        XCTAssertEqual(all.blockHashes.map(\.extraKey), [4, 4])
        XCTAssertEqual(none.blockHashes.map(\.extraKey), [0, 0])
        XCTAssertNotEqual(none.blockHashes[0], all.blockHashes[0])
    }

    /// A follow-up prompt that repeats an earlier request's prompt and output (a chat's next turn) reuses the
    /// blocks of that prompt, not those the output filled (computed by the int8 kernels, where the new prompt's
    /// tokens take the wide product), and gives bitwise what it gives with prefix caching off.
    func testFollowUpReusesOnlyBlocksComputedTheSameWay() throws {
        let model = EngineFixtures.smol
        guard model.model.wideTokenCount(promptLength: 64) > 0 else {
            throw XCTSkip("no wide product here: prompt and output blocks are computed alike")
        }
        let first = EngineFixtures.prompt(length: 40, seed: 21)
        var params = EngineFixtures.greedy(40, logprobs: 2)
        params.ignoreEOS = true
        let llm = EngineFixtures.llm(model, EngineFixtures.config())
        let out = try llm.generate(promptTokenIds: [first], params)[0].outputs[0].tokenIds
        let next = first + out + EngineFixtures.prompt(length: 10, seed: 22)
        let cached = try llm.generate(promptTokenIds: [next], EngineFixtures.greedy(5, logprobs: 2))[0]
        XCTAssertEqual(cached.numCachedTokens, 32, "the two full blocks of the first prompt only")
        let uncached = try EngineFixtures.llm(model, EngineFixtures.config(prefixCaching: false))
            .generate(promptTokenIds: [next], EngineFixtures.greedy(5, logprobs: 2))[0]
        XCTAssertEqual(cached.outputs[0].tokenIds, uncached.outputs[0].tokenIds)
        XCTAssertEqual(cached.outputs[0].logprobs, uncached.outputs[0].logprobs)
    }
}
