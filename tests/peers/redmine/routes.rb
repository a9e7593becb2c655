# Redmine's own router as an oracle, run with `rails runner` in Redmine's directory
# (tests/peers/test_routes.py). One process for every path: booting Rails is the slow part.
#
# Writes one JSON line per route of the running Redmine (verb, path spec, requirements), then
# `{"routes_end": N}`. Then reads `METHOD TARGET` lines on stdin and writes, for each, what
# the router gives a request with that method and raw target: controller, action, the
# format from the path (`path_format`, "absent" when the route sets none) and
# `params[:format]` as the controller sees it (path parameters merged over the query).
#
# The router is asked as Rails serves a request (ActionDispatch::Routing::RouteSet#call):
# the path normalised, then matched as sent. `recognize_path` would percent-decode path
# parameters a second time (`.js%256Fn` would read as json), which no request does.
require 'json'

$stdout.sync = true
routes = Rails.application.routes
normalize = ActionDispatch::Journey::Router::Utils.method(:normalize_path)

count = 0
routes.routes.each do |route|
  next unless route.dispatcher?
  requirements = route.path.requirements.transform_values { |r| r.is_a?(Regexp) ? r.source : r.to_s }
  puts({route: {verb: route.verb, spec: route.path.spec.to_s, requirements: requirements,
                controller: route.defaults[:controller], action: route.defaults[:action]}}.to_json)
  count += 1
end
puts({routes_end: count}.to_json)

STDIN.each_line do |line|
  method, target = line.chomp.split(' ', 2)
  path, query = target.split('?', 2)
  answer = {method: method, target: target, routable: false}
  begin
    env = Rack::MockRequest.env_for('/', method: method)
    env['PATH_INFO'] = path
    env['QUERY_STRING'] = query.to_s
    request = ActionDispatch::Request.new(env)
    request.path_info = normalize.call(request.path_info)
    routes.router.recognize(request) do |route, params|
      request.path_parameters = params
      next unless route.app.matches?(request) && route.app.dispatcher?

      format = ActionController::Parameters.new(request.parameters)[:format]
      answer = {method: method, target: target, routable: true,
                controller: params[:controller], action: params[:action],
                path_format: params.key?(:format) ? params[:format] : 'absent',
                format: format}
      break
    end
  rescue StandardError => e
    answer[:error] = "#{e.class}: #{e.message[0, 200]}"
  end
  puts answer.to_json
end
