# Ruby's reading of the strings Redmine trims, lowers and strips a scheme from, for
# tests/api/strings_oracle.rs: one JSON array of strings in on stdin, one JSON array out, each
# element {strip, downcase, bearer} as Redmine's Ruby computes it.
#   strip:    User.try_to_login!'s `login.to_s.strip`
#   downcase: User.find_by_login's `login.downcase` (compared with LOWER(login))
#   bearer:   Doorkeeper's from_bearer_authorization: the header without /^Bearer /i, or nil
require "json"

inputs = JSON.parse($stdin.read)
pattern = /^Bearer /i
answers = inputs.map do |text|
  {
    "strip" => text.strip,
    "downcase" => text.downcase,
    "bearer" => (text.match?(pattern) ? text.gsub(pattern, "") : nil),
  }
end
puts JSON.generate(answers)
