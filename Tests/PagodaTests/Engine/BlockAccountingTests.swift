import Foundation
import XCTest
@testable import Pagoda

final class BlockAccountingTests: XCTestCase {
    func testBlockPoolBasics() {
        var pool = BlockPool(blockCount: 4)
        let a = pool.allocate(3)!
        XCTAssertEqual(pool.freeCount, 1)
        XCTAssertNil(pool.allocate(2))
        let h = BlockHash(parent: nil, tokens: [1, 2, 3])
        pool.markCached(a[0], hash: h)
        XCTAssertEqual(pool.lookup(h), a[0])
        for b in a { pool.release(b) }
        XCTAssertEqual(pool.freeCount, 4)
        XCTAssertEqual(pool.lookup(h), a[0], "a freed block stays cached until reused")
        pool.retain(a[0])
        XCTAssertEqual(pool.freeCount, 3)
        pool.release(a[0])
        _ = pool.allocate(4)
        XCTAssertNil(pool.lookup(h), "allocating the block evicts its cached content")
        XCTAssertNil(pool.checkInvariants())
    }

    func testBlockHashChainsParents() {
        let a = BlockHash(parent: nil, tokens: [1, 2])
        let b1 = BlockHash(parent: a, tokens: [3, 4])
        let b2 = BlockHash(parent: BlockHash(parent: nil, tokens: [9, 9]), tokens: [3, 4])
        XCTAssertNotEqual(b1, b2, "same tokens under a different prefix are a different block")
        XCTAssertEqual(b1, BlockHash(parent: BlockHash(parent: nil, tokens: [1, 2]), tokens: [3, 4]))
    }

    /// Random mixes of adds, steps, aborts and finishes over a small pool (so preemption happens): after
    /// every step the pool's invariants hold, and at the end every block is free with no references.
    func testRandomOperationsLeaveNoBlocksBehind() throws {
        for round in 0..<6 {
            var rng = Xoshiro256(seed: 1000 + UInt64(round))
            let core = try EngineCore(loaded: EngineFixtures.tiny,
                                      config: EngineFixtures.config(blocks: 20 + Int(rng.next() % 20), budget: 8 + Int(rng.next() % 64),
                                                                    maxSeqs: 1 + Int(rng.next() % 8)),
                                      pool: TestModels.pool)
            var live: [String] = []
            var next = 0
            for _ in 0..<120 {
                switch rng.next() % 10 {
                case 0...3:
                    var p = SamplingParams()
                    p.temperature = Float(rng.next() % 3) / 2
                    p.maxTokens = 1 + Int(rng.next() % 24)
                    p.n = 1 + Int(rng.next() % 3)
                    p.seed = rng.next()
                    p.ignoreEOS = true
                    let len = 1 + Int(rng.next() % 70)
                    // Shared prefixes now and then, to exercise the prefix cache.
                    let prompt = rng.next() % 2 == 0 ? EngineFixtures.prompt(length: len, seed: 5)
                                                     : EngineFixtures.prompt(length: len, seed: rng.next())
                    let id = "r\(next)"
                    next += 1
                    try core.add(EngineRequest(id: id, promptTokenIds: prompt, params: p, priority: Int(rng.next() % 3)))
                    live.append(id)
                case 4 where !live.isEmpty:
                    let id = live.remove(at: Int(rng.next() % UInt64(live.count)))
                    core.abort(id)
                default:
                    _ = core.step()
                }
                XCTAssertNil(core.scheduler.kv.pool.checkInvariants())
            }
            while core.hasWork { _ = core.step() }
            let pool = core.scheduler.kv.pool
            XCTAssertEqual(pool.freeCount, pool.blockCount, "round \(round): every block is free")
            XCTAssertTrue(pool.refCounts.allSatisfy { $0 == 0 }, "round \(round): no references remain")
            XCTAssertTrue(core.scheduler.kv.tables.isEmpty)
            XCTAssertNil(pool.checkInvariants())
        }
    }

    /// KV memory in use is blocks in use × block bytes; a 16-token request holds one block, not max_model_len.
    func testMemoryIsBlocksInUse() throws {
        let core = try EngineCore(loaded: EngineFixtures.tiny, config: EngineFixtures.config(blocks: 100), pool: TestModels.pool)
        let c = EngineFixtures.tiny.config
        let dtype = core.runner.cache.dtype
        XCTAssertEqual(dtype, KVCacheDType.automatic(for: EngineFixtures.tiny.model))
        let perHead = dtype == .u8 ? 16 * c.headDim * 2 + 4 * 16 * (c.headDim / 16 + 1) : 16 * c.headDim * 2 * dtype.bytes
        XCTAssertEqual(core.blockBytes, c.layerCount * c.kvHeadCount * perHead)
        XCTAssertEqual(core.runner.cache.totalBytes, 100 * core.blockBytes)
        var p = SamplingParams.greedy
        p.maxTokens = 1
        try core.add(EngineRequest(id: "a", promptTokenIds: EngineFixtures.prompt(length: 15, seed: 1), params: p))
        let plan = core.scheduler.schedule()
        XCTAssertEqual(plan.scheduled.count, 1)
        XCTAssertEqual(core.scheduler.kv.pool.usedCount, 1, "15 prompt tokens + 1 new fit in one block")
        XCTAssertEqual(core.scheduler.kv.pool.usedCount * core.blockBytes, core.blockBytes)
        XCTAssertLessThan(core.scheduler.kv.pool.usedCount, core.maxModelLen / 16)
    }
}
