/// A metadata value of a GGUF file.
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    case array([GGUFValue])

    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        case .bool(let v): return v ? 1 : 0
        default: return nil
        }
    }
    public var double: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return int.map(Double.init)
        }
    }
    public var float: Float? {
        if case .float32(let v) = self { return v }
        return double.map(Float.init)
    }
    public var bool: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }
    public var string: String? {
        if case .string(let v) = self { return v }
        return nil
    }
    public var array: [GGUFValue]? {
        if case .array(let v) = self { return v }
        return nil
    }
    public var strings: [String]? { array?.compactMap(\.string) }
}

/// Where one tensor lives inside a GGUF file.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    /// Dimensions in GGML order: `shape[0]` is the contiguous (row-length) dimension.
    public let shape: [Int]
    public let dtype: DType
    /// Offset from the start of the data section.
    public let offset: Int
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { dtype.byteCount(elements: elementCount) }
}

/// A parsed, memory-mapped GGUF file (versions 2 and 3).
public final class GGUFFile: Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    public let dataOffset: Int
    public let file: MappedFile
    private let tensorIndex: [String: Int]

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        self.path = file.path
        var r = GGUFReader(bytes: file.bytes, path: file.path)
        let magic = try r.read(UInt32.self, "magic")
        guard magic == 0x4655_4747 else {
            throw LoadError(file: file.path, message: "not a GGUF file (bad magic \(String(magic, radix: 16)))")
        }
        version = try r.read(UInt32.self, "version")
        guard version == 2 || version == 3 else {
            throw LoadError(file: file.path, message: "unsupported GGUF version \(version) (2 and 3 are supported)")
        }
        let nTensors = try r.readCount("tensor count")
        let nKV = try r.readCount("metadata count")
        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        for _ in 0..<nKV {
            let key = try r.readString("metadata key")
            let type = try r.read(UInt32.self, "type of \(key)")
            metadata[key] = try r.readValue(type: type, key: key, depth: 0)
            keys.append(key)
        }
        self.metadata = metadata
        self.metadataKeys = keys
        var align = 32
        if let a = metadata["general.alignment"] {
            guard let v = a.int, v > 0, v & (v - 1) == 0 else {
                throw LoadError(file: file.path, message: "general.alignment must be a power of two")
            }
            align = v
        }
        alignment = align
        var infos: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
        for i in 0..<nTensors {
            let name = try r.readString("tensor name \(i)")
            let nDims = try r.read(UInt32.self, "dimension count of \(name)")
            guard nDims >= 1 && nDims <= 4 else {
                throw LoadError(file: file.path, message: "tensor \(name) has \(nDims) dimensions (1...4 allowed)")
            }
            var shape: [Int] = []
            for _ in 0..<nDims {
                let d = try r.read(UInt64.self, "shape of \(name)")
                guard d > 0, d < 1 << 40 else {
                    throw LoadError(file: file.path, message: "tensor \(name) has an invalid dimension \(d)")
                }
                shape.append(Int(d))
            }
            let rawType = try r.read(UInt32.self, "type of \(name)")
            guard let dtype = DType(rawValue: rawType) else {
                throw LoadError(file: file.path, message: "tensor \(name) has unknown type \(rawType)")
            }
            let offset = try r.read(UInt64.self, "offset of \(name)")
            guard shape[0] % dtype.blockSize == 0 else {
                throw LoadError(file: file.path, message: "tensor \(name): row length \(shape[0]) is not a multiple of the \(dtype) block size \(dtype.blockSize)")
            }
            guard offset % UInt64(align) == 0 else {
                throw LoadError(file: file.path, message: "tensor \(name): offset \(offset) is not aligned to \(align)")
            }
            guard index[name] == nil else {
                throw LoadError(file: file.path, message: "tensor \(name) appears twice")
            }
            index[name] = infos.count
            infos.append(GGUFTensorInfo(name: name, shape: shape, dtype: dtype, offset: Int(offset)))
        }
        tensors = infos
        tensorIndex = index
        dataOffset = (r.position + align - 1) / align * align
        for t in infos {
            let end = dataOffset + t.offset + t.byteCount
            guard end <= file.count else {
                throw LoadError(file: file.path, message: "truncated: tensor \(t.name) needs bytes up to \(end) but the file has \(file.count)")
            }
        }
    }

    public func tensorInfo(_ name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The raw bytes of a tensor (inside the mapping).
    public func data(of info: GGUFTensorInfo) -> UnsafeRawPointer {
        file.base + dataOffset + info.offset
    }

    public subscript(key: String) -> GGUFValue? { metadata[key] }
}

/// A bounds-checked cursor over the header bytes.
struct GGUFReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var position = 0

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    func truncated(_ what: String) -> LoadError {
        LoadError(file: path, message: "truncated or corrupt header: cannot read \(what) at byte \(position) (file has \(bytes.count) bytes)")
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        let n = MemoryLayout<T>.size
        guard position + n <= bytes.count else { throw truncated(what) }
        let v = bytes.loadUnaligned(fromByteOffset: position, as: T.self)
        position += n
        return T(littleEndian: v)
    }

    mutating func readCount(_ what: String) throws -> Int {
        let v = try read(UInt64.self, what)
        // Every entry takes at least one byte, so a count beyond the file size is corrupt.
        guard v <= UInt64(bytes.count - position) else {
            throw LoadError(file: path, message: "truncated or corrupt header: \(what) is \(v), but only \(bytes.count - position) bytes follow")
        }
        return Int(v)
    }

    mutating func readString(_ what: String) throws -> String {
        let n = try readCount("length of \(what)")
        guard position + n <= bytes.count else { throw truncated(what) }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[position..<position + n]), as: UTF8.self)
        position += n
        return s
    }

    mutating func readValue(type: UInt32, key: String, depth: Int) throws -> GGUFValue {
        switch type {
        case 0: return .uint8(try read(UInt8.self, key))
        case 1: return .int8(try read(Int8.self, key))
        case 2: return .uint16(try read(UInt16.self, key))
        case 3: return .int16(try read(Int16.self, key))
        case 4: return .uint32(try read(UInt32.self, key))
        case 5: return .int32(try read(Int32.self, key))
        case 6: return .float32(Float(bitPattern: try read(UInt32.self, key)))
        case 7:
            let b = try read(UInt8.self, key)
            guard b <= 1 else { throw LoadError(file: path, message: "corrupt header: bool \(key) has value \(b)") }
            return .bool(b == 1)
        case 8: return .string(try readString(key))
        case 9:
            guard depth < 8 else { throw LoadError(file: path, message: "corrupt header: arrays nested too deep in \(key)") }
            let elementType = try read(UInt32.self, "array type of \(key)")
            let n = try readCount("array length of \(key)")
            var values: [GGUFValue] = []
            values.reserveCapacity(n)
            for _ in 0..<n { values.append(try readValue(type: elementType, key: key, depth: depth + 1)) }
            return .array(values)
        case 10: return .uint64(try read(UInt64.self, key))
        case 11: return .int64(try read(Int64.self, key))
        case 12: return .float64(Double(bitPattern: try read(UInt64.self, key)))
        default:
            throw LoadError(file: path, message: "corrupt header: metadata \(key) has unknown value type \(type)")
        }
    }
}
