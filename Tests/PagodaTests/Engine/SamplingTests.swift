import Foundation
import XCTest
@testable import Pagoda

/// Each sampling parameter has an observable effect.
final class SamplingTests: XCTestCase {
    let model = EngineFixtures.tiny
    lazy var llm = EngineFixtures.llm(model, EngineFixtures.config())
    let prompt = EngineFixtures.prompt(length: 12, seed: 42)

    func run(_ p: SamplingParams, prompt: [Int]? = nil) throws -> CompletionOutput {
        try llm.generate(promptTokenIds: [prompt ?? self.prompt], p)[0].outputs[0]
    }

    func sampled(_ configure: (inout SamplingParams) -> Void) -> SamplingParams {
        var p = SamplingParams()
        p.maxTokens = 12
        p.temperature = 1
        p.ignoreEOS = true
        configure(&p)
        return p
    }

    func testTopKOneEqualsGreedy() throws {
        var g = EngineFixtures.greedy(12)
        g.ignoreEOS = true
        let greedy = try run(g)
        let topK1 = try run(sampled { $0.topK = 1; $0.seed = 3 })
        XCTAssertEqual(topK1.tokenIds, greedy.tokenIds)
        let tinyTopP = try run(sampled { $0.topP = 1e-6; $0.seed = 4 })
        XCTAssertEqual(tinyTopP.tokenIds, greedy.tokenIds, "top_p near 0 keeps only the best token")
        let minP1 = try run(sampled { $0.minP = 1; $0.seed = 5 })
        XCTAssertEqual(minP1.tokenIds, greedy.tokenIds, "min_p = 1 keeps only the best token")
    }

    /// The vectorized argmax is the first maximum, as a plain loop finds it: ties (across and within lanes),
    /// NaN, ±∞, all −∞, and lengths around the 16-lane vectors.
    func testArgmaxIsTheFirstMaximum() {
        func reference(_ x: [Float]) -> Int {
            var bi = 0, bv = -Float.infinity
            for (i, v) in x.enumerated() where v > bv { bv = v; bi = i }
            return bi
        }
        var rng = Xoshiro256(seed: 11)
        for n in [0, 1, 5, 15, 16, 17, 31, 32, 33, 100, 49152 + 7] {
            for trial in 0..<6 {
                // Few distinct values, so maxima repeat within and across lanes.
                var x = (0..<n).map { _ in Float(Int(rng.nextUnit() * 6)) - 3 }
                if trial == 1, n > 3 { x[n / 2] = .nan; x[n - 1] = .nan }
                if trial == 2 { x = x.map { $0 > 1 ? .infinity : $0 } }
                if trial == 3 { x = [Float](repeating: -.infinity, count: n) }
                if trial == 4, n > 0 { x[n - 1] = 100 }  // the maximum in the scalar tail
                if trial == 5 { x = x.map { _ in .nan } }
                XCTAssertEqual(LogProbs.argmax(x), reference(x), "n=\(n) trial \(trial)")
            }
        }
    }

    func testSeededRequestRepeatsWhateverElseRuns() throws {
        let p = sampled { $0.seed = 1234 }
        let alone = try run(p)
        XCTAssertEqual(try run(p).tokenIds, alone.tokenIds)
        let others = (0..<5).map { EngineFixtures.prompt(length: 5 + $0 * 9, seed: 900 + UInt64($0)) }
        let mixed = try llm.generate(promptTokenIds: others + [prompt], params: others.map { _ in sampled { $0.seed = nil } } + [p])
        XCTAssertEqual(mixed.last!.outputs[0].tokenIds, alone.tokenIds)
        let otherSeed = try run(sampled { $0.seed = 99 })
        XCTAssertNotEqual(otherSeed.tokenIds, alone.tokenIds, "a different seed should sample differently")
    }

    func testTemperatureSpreadsChoices() throws {
        // High temperature over a random-weight model: different seeds give different outputs.
        let outs = try (0..<4).map { s in try run(sampled { $0.temperature = 2; $0.seed = UInt64(s) }).tokenIds }
        XCTAssertGreaterThan(Set(outs.map { $0.description }).count, 1)
    }

    func testLogitBiasForcesToken() throws {
        let out = try run(sampled { $0.logitBias = [777: 100]; $0.seed = 1 })
        XCTAssertEqual(out.tokenIds, Array(repeating: 777, count: 12))
        var g = EngineFixtures.greedy(6)
        g.logitBias = [555: 100]
        g.ignoreEOS = true
        XCTAssertEqual(try run(g).tokenIds, Array(repeating: 555, count: 6))
    }

    /// On a prompt the default model continues by repeating itself, each penalty reduces the repetition.
    func testPenaltiesChangeRepetition() throws {
        let smol = EngineFixtures.llm(EngineFixtures.smol, EngineFixtures.config())
        let prompt = smol.tokenizer.encode("red blue red blue red blue red blue red blue red")
        var g = EngineFixtures.greedy(16)
        g.ignoreEOS = true
        func distinct(_ p: SamplingParams) throws -> (ids: [Int], distinct: Int) {
            let ids = try smol.generate(promptTokenIds: [prompt], p)[0].outputs[0].tokenIds
            return (ids, Set(ids).count)
        }
        let plain = try distinct(g)
        XCTAssertLessThan(plain.distinct, 6, "the model should repeat itself here: \(plain.ids)")
        for configure in [{ (p: inout SamplingParams) in p.repetitionPenalty = 3 },
                          { (p: inout SamplingParams) in p.presencePenalty = 2 },
                          { (p: inout SamplingParams) in p.frequencyPenalty = 2 }] {
            var p = g
            configure(&p)
            let penalized = try distinct(p)
            XCTAssertNotEqual(penalized.ids, plain.ids)
            XCTAssertGreaterThan(penalized.distinct, plain.distinct, "\(p): \(penalized.ids)")
        }
    }

    func testMaxTokensMinTokensAndEOS() throws {
        // Force EOS (2) with a bias: generation stops at once, unless min_tokens or ignore_eos say otherwise.
        var g = EngineFixtures.greedy(10)
        g.logitBias = [2: 100]
        let stopped = try run(g)
        XCTAssertEqual(stopped.tokenIds, [2])
        XCTAssertEqual(stopped.finishReason, .stop)
        var minT = g
        minT.minTokens = 4
        let delayed = try run(minT)
        XCTAssertEqual(delayed.tokenIds.count, 5)
        XCTAssertFalse(delayed.tokenIds.prefix(4).contains(2))
        XCTAssertEqual(delayed.tokenIds.last, 2)
        var ignore = g
        ignore.ignoreEOS = true
        let ignored = try run(ignore)
        XCTAssertEqual(ignored.tokenIds.count, 10)
        XCTAssertEqual(ignored.finishReason, .length)
    }

    func testStopTokenIds() throws {
        var g = EngineFixtures.greedy(12)
        g.ignoreEOS = true
        let plain = try run(g)
        var s = g
        s.stopTokenIds = [plain.tokenIds[3]]
        let stopped = try run(s)
        let cut = plain.tokenIds.firstIndex(of: plain.tokenIds[3])!
        XCTAssertEqual(stopped.tokenIds, Array(plain.tokenIds[...cut]))
        XCTAssertEqual(stopped.finishReason, .stop)
        XCTAssertEqual(stopped.stopReason, String(plain.tokenIds[3]))
    }

    /// A stop string split across tokens is never emitted, in the final text nor in any streamed delta.
    func testStopStringSplitAcrossTokens() throws {
        var g = EngineFixtures.greedy(16)
        g.ignoreEOS = true
        let plain = try run(g)
        let tok = llm.tokenizer
        // Pick a stop string that spans the boundary between tokens 4 and 5.
        let t4 = tok.decode([plain.tokenIds[4]]), t5 = tok.decode([plain.tokenIds[5]])
        try XCTSkipIf(t4.isEmpty || t5.isEmpty, "tokens decode to empty text")
        let stop = String(t4.suffix(1)) + String(t5.prefix(1))
        var s = g
        s.stop = [stop]
        // Stream through the engine to look at every delta.
        let core = llm.engine
        try core.add(EngineRequest(id: "stop-split", promptTokenIds: prompt, params: s))
        var deltas: [String] = []
        var finish: FinishReason?
        while core.hasWork {
            for o in core.step() where o.requestId == "stop-split" {
                deltas.append(o.textDelta)
                if o.finishReason != nil { finish = o.finishReason }
            }
        }
        let text = deltas.joined()
        XCTAssertEqual(finish, .stop)
        XCTAssertFalse(text.contains(stop))
        let full = plain.text
        XCTAssertEqual(text, String(full[..<full.range(of: stop)!.lowerBound]))
        var inc = s
        inc.includeStopStrInOutput = true
        let included = try run(inc)
        XCTAssertTrue(included.text.hasSuffix(stop))
    }

    func testLogprobsAndPromptLogprobs() throws {
        var g = EngineFixtures.greedy(4, logprobs: 5)
        g.promptLogprobs = 2
        let prompt = EngineFixtures.prompt(length: 40, seed: 4040)
        // The second run finds the prompt's blocks in the prefix cache; prompt logprobs must still be complete.
        _ = try llm.generate(promptTokenIds: [prompt], EngineFixtures.greedy(1))
        let res = try llm.generate(promptTokenIds: [prompt], g)[0]
        let out = res.outputs[0]
        XCTAssertEqual(out.logprobs.count, 4)
        for (lp, id) in zip(out.logprobs, out.tokenIds) {
            XCTAssertEqual(lp.token, id)
            XCTAssertEqual(lp.top.count, 5)
            XCTAssertEqual(lp.top[0].0, id, "greedy picks the top token")
            XCTAssertEqual(lp.logprob, lp.top[0].1)
            XCTAssertTrue(lp.top.map(\.1) == lp.top.map(\.1).sorted(by: >))
        }
        let pl = try XCTUnwrap(res.promptLogprobs)
        XCTAssertEqual(pl.count, prompt.count)
        XCTAssertNil(pl[0])
        // Prompt logprobs equal the logits of a plain forward pass.
        let rows = TestModels.logits(model.model, ids: prompt)
        for i in 1..<prompt.count {
            let e = try XCTUnwrap(pl[i])
            XCTAssertEqual(e.token, prompt[i])
            XCTAssertEqual(e.logprob, rows[i - 1][prompt[i]] - LogProbs.logSumExp(rows[i - 1]), accuracy: 1e-4)
            XCTAssertEqual(e.top.count, 2)
        }
    }

    /// n = 4 samples four different continuations that share the prompt's blocks (copy-on-write for the last one).
    func testNSharesPromptBlocks() throws {
        let prompt = EngineFixtures.prompt(length: 40, seed: 77)  // 2 full blocks + 8 tokens
        var p = sampled { $0.n = 4; $0.seed = 11; $0.maxTokens = 6 }
        p.temperature = 1.5
        let core = try EngineCore(loaded: model, config: EngineFixtures.config(blocks: 64), pool: TestModels.pool)
        try core.add(EngineRequest(id: "n4", promptTokenIds: prompt, params: p))
        _ = core.step()   // prefill + first tokens of all four
        _ = core.step()   // each writes its second token: the shared partial block is copied
        let tables = core.scheduler.kv.tables.values.map { $0 }
        XCTAssertEqual(tables.count, 4)
        let first = Set(tables.map { $0[0] }), second = Set(tables.map { $0[1] })
        XCTAssertEqual(first.count, 1, "the first full prompt block is shared by all four")
        XCTAssertEqual(second.count, 1, "the second full prompt block is shared by all four")
        XCTAssertEqual(Set(tables.map { $0[2] }).count, 4, "the partial last block was copied on write")
        XCTAssertEqual(core.scheduler.kv.pool.usedCount, 2 + 4)
        var outs: [[Int]] = Array(repeating: [], count: 4)
        var stepOuts = core.step()
        while true {
            for o in stepOuts { outs[o.index] += o.newTokenIds }
            if !core.hasWork { break }
            stepOuts = core.step()
        }
        // Replay through LLM to check the choices differ and are reproducible.
        let r1 = try llm.generate(promptTokenIds: [prompt], p)[0].outputs.map(\.tokenIds)
        let r2 = try llm.generate(promptTokenIds: [prompt], p)[0].outputs.map(\.tokenIds)
        XCTAssertEqual(r1, r2, "seeded n=4 repeats")
        XCTAssertGreaterThan(Set(r1.map { $0.description }).count, 1, "the four choices differ")
        XCTAssertTrue(r1.allSatisfy { $0.count == 6 })
    }

    func testInvalidParametersAreRejected() throws {
        var p = SamplingParams()
        p.n = 0
        XCTAssertThrowsError(try llm.engine.add(EngineRequest(id: "bad", promptTokenIds: prompt, params: p))) { e in
            XCTAssertEqual((e as? RequestError).map { "\($0)" }, "n must be at least 1, got 0")
        }
        XCTAssertThrowsError(try llm.engine.add(EngineRequest(id: "bad2", promptTokenIds: [], params: SamplingParams())))
        XCTAssertThrowsError(try llm.engine.add(EngineRequest(id: "bad3", promptTokenIds: [999_999], params: SamplingParams())))
        var long = SamplingParams()
        long.maxTokens = 5000
        XCTAssertThrowsError(try llm.engine.add(EngineRequest(id: "bad4", promptTokenIds: prompt, params: long)))
    }
}
