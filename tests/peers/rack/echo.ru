# A Rack upstream for the peer tests: answers every request with the Rack environment's
# request line and HTTP_* variables as JSON, so a test sees what Redmine (a Rack app) would
# read, after the server has mapped header names (`X_Auth_User_Id` and `X-Auth-User-Id` are
# both HTTP_X_AUTH_USER_ID) and kept one value.
require "json"

run lambda { |env|
  seen = env.select { |name, _| name.start_with?("HTTP_") }
  seen["PATH_INFO"] = env["PATH_INFO"]
  seen["QUERY_STRING"] = env["QUERY_STRING"]
  seen["REQUEST_METHOD"] = env["REQUEST_METHOD"]
  seen["upstream"] = "rack"
  body = JSON.generate(seen)
  [200, { "Content-Type" => "application/json", "Content-Length" => body.bytesize.to_s }, [body]]
}
