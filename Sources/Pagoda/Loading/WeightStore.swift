import Foundation

/// Named tensors of a model, with names in GGUF convention (`blk.N.attn_q.weight`, `token_embd.weight`, ...),
/// whichever format they came from.
public struct WeightStore: Sendable {
    public let source: String
    public private(set) var tensors: [String: Tensor] = [:]

    public init(source: String) { self.source = source }

    public mutating func add(_ tensor: Tensor) { tensors[tensor.name] = tensor }

    public func optional(_ name: String) -> Tensor? { tensors[name] }

    public func require(_ name: String) throws -> Tensor {
        guard let t = tensors[name] else {
            throw LoadError(file: source, message: "missing tensor \(name)")
        }
        return t
    }

    /// A tensor that must have the given shape (row-major, contiguous dimension last).
    public func require(_ name: String, shape: [Int]) throws -> Tensor {
        let t = try require(name)
        guard t.shape == shape else {
            throw LoadError(file: source, message: "tensor \(name) has shape \(t.shape), expected \(shape)")
        }
        guard t.dtype.canDequantize else {
            throw LoadError(file: source, message: "tensor \(name) has unsupported type \(t.dtype)")
        }
        return t
    }

    /// All tensors of a GGUF file.
    public static func gguf(_ file: GGUFFile) -> WeightStore {
        var store = WeightStore(source: file.path)
        for info in file.tensors {
            store.add(Tensor(name: info.name, dtype: info.dtype, shape: info.shape.reversed(), data: file.data(of: info), owner: file))
        }
        return store
    }

    /// Hugging Face tensor names (Llama-family layout) mapped to GGUF names.
    static func ggufName(forHuggingFace name: String) -> String? {
        let fixed: [String: String] = [
            "model.embed_tokens.weight": "token_embd.weight",
            "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight",
        ]
        if let n = fixed[name] { return n }
        let parts = name.split(separator: ".")
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else { return nil }
        let rest = parts[3...].joined(separator: ".")
        let map: [String: String] = [
            "input_layernorm.weight": "attn_norm.weight",
            "self_attn.q_proj.weight": "attn_q.weight",
            "self_attn.k_proj.weight": "attn_k.weight",
            "self_attn.v_proj.weight": "attn_v.weight",
            "self_attn.q_proj.bias": "attn_q.bias",
            "self_attn.k_proj.bias": "attn_k.bias",
            "self_attn.v_proj.bias": "attn_v.bias",
            "self_attn.o_proj.weight": "attn_output.weight",
            "self_attn.o_proj.bias": "attn_output.bias",
            "self_attn.q_norm.weight": "attn_q_norm.weight",
            "self_attn.k_norm.weight": "attn_k_norm.weight",
            "post_attention_layernorm.weight": "ffn_norm.weight",
            "mlp.gate_proj.weight": "ffn_gate.weight",
            "mlp.up_proj.weight": "ffn_up.weight",
            "mlp.down_proj.weight": "ffn_down.weight",
        ]
        guard let m = map[rest] else { return nil }
        return "blk.\(layer).\(m)"
    }

    /// All tensors of a Hugging Face folder: `model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`.
    public static func huggingFace(folder: URL) throws -> WeightStore {
        var store = WeightStore(source: folder.path)
        let index = folder.appendingPathComponent("model.safetensors.index.json")
        var files: [String] = []
        if FileManager.default.fileExists(atPath: index.path) {
            let data = try Data(contentsOf: index)
            guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = json["weight_map"] as? [String: String] else {
                throw LoadError(file: index.path, message: "not a safetensors index: no weight_map object")
            }
            files = Array(Set(map.values)).sorted()
        } else if FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors").path) {
            files = ["model.safetensors"]
        } else {
            throw LoadError(file: folder.path, message: "no model.safetensors or model.safetensors.index.json")
        }
        for name in files {
            let st = try SafetensorsFile(path: folder.appendingPathComponent(name).path)
            for (tname, info) in st.tensors {
                guard let g = ggufName(forHuggingFace: tname) else { continue }
                store.add(Tensor(name: g, dtype: info.dtype, shape: info.shape, data: st.data(of: info), owner: st))
            }
        }
        return store
    }
}
