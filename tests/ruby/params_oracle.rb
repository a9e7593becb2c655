# frozen_string_literal: true
#
# The parameters Rails reads, for the gate's differential tests (tests/api/params_oracle.rs):
# one JSON request per input line, one JSON answer per output line, so that one long-lived
# process answers hundreds of cases.
#
# Request:  {"query": "...", "method": "POST", "content_type": "..." or null,
#            "content_length": "..." or null, "body": base64 or null}
# Answer:   {"error": "ClassName"} when Rack or Rails raise, else
#           {"params": {"key": {"kind": "absent"|"nil"|"text"|"empty"|"other", "text": "...",
#                               "present": true|false}, ...}}
#
# It reads parameters the way Redmine 5.0.4 does: Debian's Rails 6.1 (ActionDispatch::Request
# #parameters), Rack 2.2, and actionpack-xml_parser registered as Redmine's Gemfile does.

require "base64"
require "json"
require "stringio"
require "rack"
require "action_dispatch"
require "action_pack/xml_parser"

ActionPack::XmlParser.register

NAMES = %w[key access_token bearer_token format].freeze

def describe(params, name)
  return { "kind" => "absent" } unless params.key?(name)

  value = params[name]
  kind(value).merge("present" => value.present?)
end

def kind(value)
  case value
  when nil, false then { "kind" => "nil" }
  when String then { "kind" => "text", "text" => value }
  when Integer, true then { "kind" => "text", "text" => value.to_s }
  when Array, Hash then { "kind" => value.empty? ? "empty" : "other" }
  else { "kind" => "other" }
  end
end

def answer(request)
  body = request["body"] ? Base64.strict_decode64(request["body"]) : ""
  env = Rack::MockRequest.env_for("/", method: request["method"], input: body)
  env["QUERY_STRING"] = request["query"]
  env.delete("CONTENT_TYPE")
  env.delete("CONTENT_LENGTH")
  env["CONTENT_TYPE"] = request["content_type"] if request["content_type"]
  env["CONTENT_LENGTH"] = request["content_length"] if request["content_length"]
  params = ActionDispatch::Request.new(env).parameters
  { "params" => NAMES.to_h { |name| [name, describe(params, name)] } }
rescue StandardError, SystemStackError => e
  { "error" => e.class.name }
end

$stdout.sync = true
$stdin.each_line do |line|
  $stdout.puts(JSON.generate(answer(JSON.parse(line))))
end
