import Foundation
import XCTest
@testable import Pagoda

/// Tiny random-weight Hugging Face checkpoints (bf16 safetensors) against Transformers fp32.
final class ArchGoldenTests: XCTestCase {
    func check(_ arch: String) throws {
        let folder = Golden.url("archs/\(arch)")
        let model = try LlamaModel(config: ModelConfig.fromHuggingFace(folder: folder), weights: WeightStore.huggingFace(folder: folder))
        for rec in try Golden.jsonLines("archs/\(arch)/reference.jsonl") {
            let ids = (rec["input_ids"] as! [Any]).ints
            let all = TestModels.logits(model, ids: ids)
            let last = all[all.count - 1]
            let topIds = (rec["last_top_ids"] as! [Any]).ints
            let topLogits = (rec["last_top_logits"] as! [Any]).floats
            let ours = Array(last.indices.sorted { last[$0] > last[$1] }.prefix(topIds.count))
            XCTAssertEqual(ours, topIds, "\(arch) n=\(ids.count): top ids")
            for (id, ref) in zip(topIds, topLogits) {
                XCTAssertEqual(last[id], ref, accuracy: 1e-2, "\(arch) n=\(ids.count) id \(id)")
            }
            let probeIds = (rec["probe_ids"] as! [Any]).ints
            for (p, row) in (rec["probe_logits"] as! [[Any]]).enumerated() {
                for (id, ref) in zip(probeIds, row.floats) {
                    XCTAssertEqual(all[p][id], ref, accuracy: 1e-2, "\(arch) n=\(ids.count) position \(p) probe \(id)")
                }
            }
            let argmax = (rec["argmax_per_position"] as! [Any]).ints
            XCTAssertEqual(all.map(LogProbs.argmax), argmax, "\(arch) n=\(ids.count): argmax per position")
            // Greedy continuation with the KV cache, one token at a time.
            let expected = (rec["greedy_16"] as! [Any]).ints
            let session = GenerationSession(model: model, maxTokens: ids.count + expected.count, pool: TestModels.pool)
            var logits = session.append(ids)[0]
            var out: [Int] = []
            for _ in expected.indices {
                let next = LogProbs.argmax(logits)
                out.append(next)
                logits = session.append([next])[0]
            }
            XCTAssertEqual(out, expected, "\(arch) n=\(ids.count): greedy_16")
        }
    }

    func testQwen2() throws { try check("qwen2") }
    func testQwen3() throws { try check("qwen3") }
    func testMistral() throws { try check("mistral") }
}
