import Foundation
import XCTest
@testable import Pagoda

/// The same weights loaded from the GGUF file and from a Hugging Face folder written from it give the same logits.
final class FormatEquivalenceTests: XCTestCase {
    /// llama.cpp stores Llama's Q and K rows permuted for its adjacent-pair RoPE; Hugging Face uses halves.
    static func unpermute(_ w: [Float], heads: Int, rows: Int, cols: Int) -> [Float] {
        let hd = rows / heads
        var out = w
        for h in 0..<heads {
            for i in 0..<hd / 2 {
                for j in 0..<2 {
                    let src = h * hd + i * 2 + j, dst = h * hd + j * (hd / 2) + i
                    for c in 0..<cols { out[dst * cols + c] = w[src * cols + c] }
                }
            }
        }
        return out
    }

    func testGGUFAndHuggingFaceFolderGiveSameLogits() throws {
        let gguf = TestModels.smolGGUF
        let config = try ModelConfig.fromGGUF(gguf)
        let store = WeightStore.gguf(gguf)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pagoda-hf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        var reverse: [String: String] = ["token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"]
        let perLayer = ["input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                        "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                        "mlp.down_proj.weight"]
        for l in 0..<config.layerCount {
            for p in perLayer {
                let hf = "model.layers.\(l).\(p)"
                reverse[WeightStore.ggufName(forHuggingFace: hf)!] = hf
            }
        }
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for (name, t) in store.tensors.sorted(by: { $0.key < $1.key }) {
            let hfName = try XCTUnwrap(reverse[name], "no HF name for \(name)")
            var values = t.toFloats()
            if name.hasSuffix("attn_q.weight") { values = Self.unpermute(values, heads: config.headCount, rows: t.rows, cols: t.columns) }
            if name.hasSuffix("attn_k.weight") { values = Self.unpermute(values, heads: config.kvHeadCount, rows: t.rows, cols: t.columns) }
            tensors.append((hfName, t.shape, values))
        }
        try SafetensorsFile.write(tensors, to: dir.appendingPathComponent("model.safetensors"))
        let configJSON: [String: Any] = [
            "model_type": "llama", "hidden_size": config.hiddenSize, "intermediate_size": config.intermediateSize,
            "num_hidden_layers": config.layerCount, "num_attention_heads": config.headCount,
            "num_key_value_heads": config.kvHeadCount, "vocab_size": config.vocabSize,
            "rms_norm_eps": Double(config.rmsNormEps), "rope_theta": config.ropeTheta, "tie_word_embeddings": true,
            "max_position_embeddings": config.maxPositions, "dtype": "float32",
        ]
        try JSONSerialization.data(withJSONObject: configJSON).write(to: dir.appendingPathComponent("config.json"))

        let hfModel = try LlamaModel(config: ModelConfig.fromHuggingFace(folder: dir), weights: WeightStore.huggingFace(folder: dir))
        let ids = (try Golden.jsonLines("hf/logits.jsonl")[0]["prompt_ids"] as! [Any]).ints
        let a = TestModels.logits(TestModels.smolFP32, ids: ids)
        let b = TestModels.logits(hfModel, ids: ids)
        var worst: Float = 0
        for (ra, rb) in zip(a, b) { for (x, y) in zip(ra, rb) { worst = max(worst, abs(x - y)) } }
        XCTAssertLessThan(worst, 1e-3, "GGUF vs HF folder logits differ by \(worst)")
    }
}
