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
