import Foundation
import XCTest
@testable import Pagoda

/// Continuous batching must not change any request's result.
final class BatchingTests: XCTestCase {
    /// 32 requests of 1 to 1,000 prompt tokens, chunked prefill with a small token budget: each gives exactly
    /// the tokens and bitwise the logprobs it gives alone.
    func testBatchedEqualsAloneWithChunkedPrefill() throws {
        let model = EngineFixtures.smol
        var lengths = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 1000]
        while lengths.count < 32 { lengths.append(1 + (lengths.count * 37) % 120) }
        let prompts = lengths.enumerated().map { EngineFixtures.prompt(length: $1, seed: UInt64($0)) }
        let params = EngineFixtures.greedy(6, logprobs: 3)
        let batched = try EngineFixtures.llm(model, EngineFixtures.config(blocks: 1024, budget: 256)).generate(promptTokenIds: prompts, params)
        let alone = EngineFixtures.llm(model, EngineFixtures.config(blocks: 1024, prefixCaching: false))
        for (i, p) in prompts.enumerated() {
            let a = try alone.generate(promptTokenIds: [p], params)[0].outputs[0]
            let b = batched[i].outputs[0]
            XCTAssertEqual(b.tokenIds, a.tokenIds, "prompt \(i) (\(p.count) tokens): tokens differ")
            XCTAssertEqual(b.logprobs, a.logprobs, "prompt \(i) (\(p.count) tokens): logprobs are not bitwise equal")
        }
    }

    /// fp16 and u8 KV caches: fewer bytes per block, and batching still changes nothing (tokens and bitwise
    /// logprobs equal the request's solo run on the same cache type), across a partition boundary (300 tokens).
    func testReducedCachesBatchedEqualsAlone() throws {
        let model = EngineFixtures.smol
        let prompts = [1, 7, 16, 33, 300, 90].enumerated().map { EngineFixtures.prompt(length: $1, seed: 50 + UInt64($0)) }
        let params = EngineFixtures.greedy(5, logprobs: 2)
        var c32 = EngineFixtures.config(blocks: 256)
        c32.kvCacheDtype = .f32
        let f32Bytes = EngineFixtures.llm(model, c32).engine.blockBytes
        for dtype in [KVCacheDType.f16, .u8] {
            var c = EngineFixtures.config(blocks: 256, budget: 64)
            c.kvCacheDtype = dtype
            let batchedLLM = EngineFixtures.llm(model, c)
            let batched = try batchedLLM.generate(promptTokenIds: prompts, params)
            var aloneConfig = EngineFixtures.config(blocks: 256, prefixCaching: false)
            aloneConfig.kvCacheDtype = dtype
            let alone = EngineFixtures.llm(model, aloneConfig)
            XCTAssertEqual(batchedLLM.engine.runner.cache.dtype, dtype)
            // SmolLM2: 64-dimension heads, blocks of 16: u8 is 64 code bytes + 4·2·2 (keys) or 2·2 (values) bytes
            // of parameters per head and token, against 256 for fp16.
            XCTAssertEqual(batchedLLM.engine.blockBytes * (dtype == .f16 ? 2 : 128), f32Bytes * (dtype == .f16 ? 1 : 37))
            for (i, p) in prompts.enumerated() {
                let a = try alone.generate(promptTokenIds: [p], params)[0].outputs[0]
                let b = batched[i].outputs[0]
                XCTAssertEqual(b.tokenIds, a.tokenIds, "\(dtype) prompt \(i) (\(p.count) tokens): tokens differ")
                XCTAssertEqual(b.logprobs, a.logprobs, "\(dtype) prompt \(i) (\(p.count) tokens): logprobs are not bitwise equal")
            }
        }
    }

    /// Runs `prompts` with a roomy KV pool and with `blocks` blocks and a budget of 64 tokens, which must force
    /// preemption: every output keeps its tokens and bitwise logprobs, and no block stays in use.
    private func checkPreemptionKeepsOutputs(_ model: LoadedModel, prompts: [[Int]], maxTokens: Int, blocks: Int,
                                             file: StaticString = #filePath, line: UInt = #line) throws {
        var params = EngineFixtures.greedy(maxTokens, logprobs: 2)
        params.ignoreEOS = true
        let free = try EngineFixtures.llm(model, EngineFixtures.config(blocks: 512)).generate(promptTokenIds: prompts, params)
        let tightLLM = EngineFixtures.llm(model, EngineFixtures.config(blocks: blocks, budget: 64))
        let tight = try tightLLM.generate(promptTokenIds: prompts, params)
        XCTAssertGreaterThan(tightLLM.engine.scheduler.numPreemptions, 0, "the small pool should force preemption",
                             file: file, line: line)
        for i in prompts.indices {
            XCTAssertEqual(tight[i].outputs[0].tokenIds, free[i].outputs[0].tokenIds, "prompt \(i)", file: file, line: line)
            XCTAssertEqual(tight[i].outputs[0].logprobs, free[i].outputs[0].logprobs, "prompt \(i)", file: file, line: line)
            XCTAssertEqual(tight[i].outputs[0].tokenIds.count, maxTokens, file: file, line: line)
        }
        let pool = tightLLM.engine.scheduler.kv.pool
        XCTAssertEqual(pool.usedCount, 0, file: file, line: line)
        XCTAssertNil(pool.checkInvariants(), file: file, line: line)
    }

    /// A KV pool too small for all requests at once: preemption happens, and every output is unchanged.
    func testPreemptionKeepsOutputs() throws {
        let prompts = (0..<8).map { EngineFixtures.prompt(length: 40 + 7 * $0, seed: 100 + UInt64($0)) }
        try checkPreemptionKeepsOutputs(EngineFixtures.tiny, prompts: prompts, maxTokens: 48, blocks: 24)
    }

    /// The same on the quantized default model, whose prompt tokens take the wide product and generated ones the
    /// int8 kernels: a preempted sequence recomputes its prompt and its output each the way it first did.
    func testPreemptionKeepsOutputsWithWidePrompts() throws {
        let prompts = (0..<6).map { EngineFixtures.prompt(length: 30 + 9 * $0, seed: 400 + UInt64($0)) }
        try checkPreemptionKeepsOutputs(EngineFixtures.smol, prompts: prompts, maxTokens: 24, blocks: 14)
    }

    /// Priorities: with room for one sequence at a time, the higher-priority (lower value) request runs first.
    func testPriorityOrdersAdmission() throws {
        let model = EngineFixtures.tiny
        let llm = EngineFixtures.llm(model, EngineFixtures.config(maxSeqs: 1))
        let prompts = (0..<3).map { EngineFixtures.prompt(length: 10, seed: 300 + UInt64($0)) }
        let res = try llm.generate(promptTokenIds: prompts, EngineFixtures.greedy(4), priorities: [5, 0, 1])
        let firstTokens = res.map { $0.metrics[0].firstToken! }
        XCTAssertLessThan(firstTokens[1], firstTokens[2])
        XCTAssertLessThan(firstTokens[2], firstTokens[0])
    }
}
