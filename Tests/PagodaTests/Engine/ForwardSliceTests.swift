import Foundation
import XCTest
@testable import Pagoda

/// A large batch runs through the layers in slices of whole sequences; slicing must change no result.
final class ForwardSliceTests: XCTestCase {
    /// Sequences of 3, 40, 17, 64, 9 and 30 new tokens (two of them continuing a cached prefix), logits wanted at
    /// rows out of order: the forward pass in slices of at most 50 tokens gives bitwise the logits of one pass.
    func testSlicedForwardEqualsOnePass() throws {
        let model = TestModels.smol
        let lengths = [3, 40, 17, 64, 9, 30]
        let cached = [0, 0, 5, 0, 20, 0]  // tokens already in the cache before this batch
        let bs = 16
        var tokens: [Int32] = [], positions: [Int32] = [], seqs: [AttentionSequence] = []
        var nextBlock: Int32 = 0
        var prefixes: [(AttentionSequence, [Int32])] = []
        var rng = Xoshiro256(seed: 11)
        for (i, n) in lengths.enumerated() {
            let total = cached[i] + n
            let blocks = (total + bs - 1) / bs
            let table = (0..<Int32(blocks)).map { nextBlock + $0 }
            nextBlock += Int32(blocks)
            let ids = (0..<total).map { _ in Int32(rng.next() % 40000 + 100) }
            if cached[i] > 0 {
                prefixes.append((AttentionSequence(tokenStart: 0, tokenCount: cached[i], startPosition: 0, blockTable: table),
                                 Array(ids[0..<cached[i]])))
            }
            seqs.append(AttentionSequence(tokenStart: tokens.count, tokenCount: n, startPosition: cached[i], blockTable: table))
            tokens += ids[cached[i]...]
            positions += (cached[i]..<total).map(Int32.init)
        }
        let rows = [tokens.count - 1, 2, 42, 100, 59, 0, 120, 150]
        let batch = ForwardBatch(tokens: tokens, positions: positions, sequences: seqs, logitRows: rows)
        XCTAssertEqual(ForwardBatch.slices(of: batch, maxTokens: 50).map { $0.batch.tokens.count }, [43, 17, 64, 39])

        func run(sliceTokens: Int) -> [Float] {
            let cache = KVCacheStorage(config: model.config, blockCount: Int(nextBlock), blockSize: bs, dtype: .automatic(for: model))
            for (s, ids) in prefixes {
                _ = model.forward(ForwardBatch(tokens: ids, positions: (0..<Int32(ids.count)).map { $0 }, sequences: [s],
                                               logitRows: []), cache: cache, pool: TestModels.pool)
            }
            return model.forward(batch, cache: cache, pool: TestModels.pool, sliceTokens: sliceTokens)
        }
        let whole = run(sliceTokens: Int.max)
        let sliced = run(sliceTokens: 50)
        XCTAssertEqual(whole.count, rows.count * model.config.vocabSize)
        XCTAssertEqual(sliced, whole, "sliced logits are not bitwise those of one pass")
    }

    /// Slices are runs of whole sequences within the limit (a longer sequence alone), rows keep their output
    /// order, and a batch whose sequences do not tile its tokens in order is left whole.
    func testSlicePlan() {
        func seq(_ start: Int, _ count: Int) -> AttentionSequence {
            AttentionSequence(tokenStart: start, tokenCount: count, startPosition: 0, blockTable: [0])
        }
        let batch = ForwardBatch(tokens: Array(repeating: 1, count: 20), positions: Array(repeating: 0, count: 20),
                                 sequences: [seq(0, 4), seq(4, 4), seq(8, 9), seq(17, 3)], logitRows: [19, 3, 7, 16])
        let slices = ForwardBatch.slices(of: batch, maxTokens: 8)
        XCTAssertEqual(slices.map { $0.batch.tokens.count }, [8, 9, 3])
        XCTAssertEqual(slices.map { $0.batch.sequences.map(\.tokenStart) }, [[0, 4], [0], [0]])
        XCTAssertEqual(slices.map { $0.batch.logitRows }, [[3, 7], [8], [2]])
        XCTAssertEqual(slices.map(\.outputRows), [[1, 2], [3], [0]])
        XCTAssertEqual(ForwardBatch.slices(of: batch, maxTokens: 20).count, 1)
        let unordered = ForwardBatch(tokens: batch.tokens, positions: batch.positions,
                                     sequences: [seq(4, 4), seq(0, 4), seq(8, 9), seq(17, 3)], logitRows: [0])
        XCTAssertEqual(ForwardBatch.slices(of: unordered, maxTokens: 8).count, 1)
    }
}
