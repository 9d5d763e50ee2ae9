import Foundation
import XCTest
@testable import Pagoda

/// The asynchronous front: streaming, concurrency, and abort freeing blocks at once.
final class AsyncEngineTests: XCTestCase {
    static let engine: AsyncEngine = try! AsyncEngine(loaded: EngineFixtures.tiny, config: EngineFixtures.config(blocks: 256))

    static func collect(_ stream: AsyncStream<RequestOutput>) async -> (ids: [Int], text: String, finish: FinishReason?) {
        var ids: [Int] = [], text = "", finish: FinishReason?
        for await o in stream {
            ids += o.newTokenIds
            text += o.textDelta
            if o.finishReason != nil { finish = o.finishReason }
        }
        return (ids, text, finish)
    }

    func testConcurrentStreamsEqualOfflineResults() async throws {
        let engine = Self.engine
        let prompts = (0..<12).map { EngineFixtures.prompt(length: 3 + 11 * $0, seed: 500 + UInt64($0)) }
        var params = EngineFixtures.greedy(10)
        params.ignoreEOS = true
        let offline = try EngineFixtures.llm(EngineFixtures.tiny, EngineFixtures.config()).generate(promptTokenIds: prompts, params)
        let results = try await withThrowingTaskGroup(of: (Int, [Int], String).self) { group in
            for (i, p) in prompts.enumerated() {
                let stream = try engine.generate(EngineRequest(id: "conc-\(i)", promptTokenIds: p, params: params))
                group.addTask {
                    let r = await Self.collect(stream)
                    return (i, r.ids, r.text)
                }
            }
            var out: [Int: ([Int], String)] = [:]
            for try await (i, ids, text) in group { out[i] = (ids, text) }
            return out
        }
        for i in prompts.indices {
            XCTAssertEqual(results[i]!.0, offline[i].outputs[0].tokenIds, "prompt \(i)")
            XCTAssertEqual(results[i]!.1, offline[i].outputs[0].text, "prompt \(i)")
        }
    }

    func testCancellingAStreamAbortsAndFreesBlocks() async throws {
        let engine = Self.engine
        var params = EngineFixtures.greedy(400)
        params.ignoreEOS = true
        var tasks: [Task<Int, Never>] = []
        for i in 0..<6 {
            let stream = try engine.generate(EngineRequest(id: "drop-\(i)", promptTokenIds: EngineFixtures.prompt(length: 50, seed: UInt64(i)), params: params))
            tasks.append(Task {
                var n = 0
                for await o in stream {
                    n += o.newTokenIds.count
                    if n >= 3 { break }   // leaving the loop ends the stream: the request is aborted
                }
                return n
            })
        }
        for t in tasks { _ = await t.value }
        // Aborts are applied at the next step boundary.
        var stats = engine.stats()
        for _ in 0..<200 where stats.kvBlocksUsed != 0 || stats.numRunning != 0 {
            try await Task.sleep(nanoseconds: 10_000_000)
            stats = engine.stats()
        }
        XCTAssertEqual(stats.kvBlocksUsed, 0, "aborted requests free their blocks")
        XCTAssertEqual(stats.numRunning, 0)
        XCTAssertLessThan(stats.generationTokensTotal, 6 * 400)
        // The engine still answers.
        let r = await Self.collect(try engine.generate(EngineRequest(id: "after", promptTokenIds: [1, 2, 3], params: EngineFixtures.greedy(3))))
        XCTAssertNotNil(r.finish)
    }

    func testBadRequestsThrowAtOnce() throws {
        XCTAssertThrowsError(try Self.engine.generate(EngineRequest(id: "x", promptTokenIds: [], params: SamplingParams())))
        var p = SamplingParams()
        p.topP = 0
        XCTAssertThrowsError(try Self.engine.generate(EngineRequest(id: "y", promptTokenIds: [5], params: p))) { e in
            guard case .invalid(let param, _)? = e as? RequestError else { return XCTFail("\(e)") }
            XCTAssertEqual(param, "top_p")
        }
        let long = Array(repeating: 5, count: 5000)
        XCTAssertThrowsError(try Self.engine.generate(EngineRequest(id: "z", promptTokenIds: long, params: SamplingParams()))) { e in
            guard case .tooLong? = e as? RequestError else { return XCTFail("\(e)") }
        }
    }
}
