import XCTest
@testable import Pagoda

final class SmokeTests: XCTestCase {
    func testVersion() { XCTAssertFalse(PagodaInfo.version.isEmpty) }
}
