import Foundation

/// One tensor inside a `.safetensors` file.
public struct SafetensorsTensorInfo: Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Absolute offset of the data within the file.
    public let offset: Int
    public let byteCount: Int
}

/// A memory-mapped `.safetensors` file: an 8-byte header length, a JSON header, then the raw data.
public final class SafetensorsFile: Sendable {
    public let path: String
    public let file: MappedFile
    public let tensors: [String: SafetensorsTensorInfo]
    public let metadata: [String: String]

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        self.file = file
        self.path = path
        guard file.count >= 8 else {
            throw LoadError(file: path, message: "truncated: a safetensors file needs at least 8 bytes, this one has \(file.count)")
        }
        let headerLength = Int(clamping: UInt64(littleEndian: file.bytes.loadUnaligned(as: UInt64.self)))
        guard headerLength > 1, headerLength <= file.count - 8 else {
            throw LoadError(file: path, message: "corrupt: header length \(headerLength) does not fit in the file (\(file.count) bytes)")
        }
        let headerData = Data(UnsafeRawBufferPointer(rebasing: file.bytes[8..<8 + headerLength]))
        guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw LoadError(file: path, message: "corrupt: the header is not a JSON object")
        }
        let dataStart = 8 + headerLength
        let dataSize = file.count - dataStart
        var tensors: [String: SafetensorsTensorInfo] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                for (k, v) in value as? [String: Any] ?? [:] { metadata[k] = "\(v)" }
                continue
            }
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int],
                  let offsets = entry["data_offsets"] as? [Int], offsets.count == 2 else {
                throw LoadError(file: path, message: "corrupt: tensor \(name) lacks dtype, shape or data_offsets")
            }
            let dtype: DType
            switch dtypeName {
            case "F32": dtype = .f32
            case "F16": dtype = .f16
            case "BF16": dtype = .bf16
            case "I8": dtype = .i8
            case "I16": dtype = .i16
            case "I32": dtype = .i32
            case "I64": dtype = .i64
            case "F64": dtype = .f64
            default:
                throw LoadError(file: path, message: "tensor \(name) has dtype \(dtypeName); supported: F32, F16, BF16")
            }
            guard shape.allSatisfy({ $0 >= 0 }) else {
                throw LoadError(file: path, message: "corrupt: tensor \(name) has a negative dimension")
            }
            let count = shape.reduce(1, *)
            let expected = count * dtype.blockBytes
            let (begin, end) = (offsets[0], offsets[1])
            guard begin >= 0, end >= begin, end - begin == expected else {
                throw LoadError(file: path, message: "corrupt: tensor \(name) claims bytes \(begin)..<\(end) but \(dtypeName) \(shape) needs \(expected) bytes")
            }
            guard end <= dataSize else {
                throw LoadError(file: path, message: "truncated: tensor \(name) needs data up to byte \(end) but the data section has \(dataSize) bytes")
            }
            tensors[name] = SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape, offset: dataStart + begin, byteCount: expected)
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    public func data(of info: SafetensorsTensorInfo) -> UnsafeRawPointer { file.base + info.offset }
}

extension SafetensorsFile {
    /// Writes fp32 tensors as a `.safetensors` file (names in the order given).
    public static func write(_ tensors: [(name: String, shape: [Int], values: [Float])], to url: URL) throws {
        var header = "{"
        var offset = 0
        for (i, t) in tensors.enumerated() {
            precondition(t.shape.reduce(1, *) == t.values.count, "shape \(t.shape) does not match \(t.values.count) values of \(t.name)")
            let bytes = t.values.count * 4
            header += (i > 0 ? "," : "") + "\"\(t.name)\":{\"dtype\":\"F32\",\"shape\":\(t.shape),\"data_offsets\":[\(offset),\(offset + bytes)]}"
            offset += bytes
        }
        header += "}"
        while (header.utf8.count + 8) % 8 != 0 { header += " " }
        var data = Data()
        var length = UInt64(header.utf8.count).littleEndian
        withUnsafeBytes(of: &length) { data.append(contentsOf: $0) }
        data.append(contentsOf: Array(header.utf8))
        for t in tensors { t.values.withUnsafeBytes { data.append(contentsOf: $0) } }
        try data.write(to: url)
    }
}
