import HTTPTypes
import Pagoda

/// An error answered as `{"error": {"message", "type", "param", "code"}}`.
public struct APIError: Error, Sendable {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    public var retryAfter: Int?

    public init(status: HTTPResponse.Status, message: String, type: String, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: .badRequest, message: message, type: "invalid_request_error", param: param, code: code)
    }

    public static func notFound(_ message: String, param: String? = nil, code: String? = "model_not_found") -> APIError {
        APIError(status: .notFound, message: message, type: "not_found_error", param: param, code: code)
    }

    public static let unauthorized = APIError(
        status: .unauthorized, message: "Incorrect API key provided.", type: "authentication_error", code: "invalid_api_key")

    public static func queueFull() -> APIError {
        var e = APIError(status: .tooManyRequests, message: "The server is overloaded: the waiting queue is full. Retry later.",
                         type: "rate_limit_error", code: "queue_full")
        e.retryAfter = 1
        return e
    }

    public var json: JinjaValue {
        ["error": ["message": .string(message), "type": .string(type),
                   "param": param.map { .string($0) } ?? .none, "code": code.map { .string($0) } ?? .none]]
    }

    /// Maps the engine's synchronous errors to API errors.
    static func from(engine error: Error) -> APIError {
        if let e = error as? APIError { return e }
        if let e = error as? RequestError {
            switch e {
            case .invalid(let param, let message): return .invalid(message, param: param)
            case .queueFull: return .queueFull()
            case .tooLong:
                return .invalid(e.description, param: "prompt", code: "context_length_exceeded")
            case .duplicateId:
                return APIError(status: .conflict, message: e.description, type: "invalid_request_error")
            }
        }
        return APIError(status: .internalServerError, message: "\(error)", type: "internal_error")
    }
}
