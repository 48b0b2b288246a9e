// The hello deployment: every exported function becomes an endpoint,
//   POST /fn/hello/<name>  with a JSON array (positional) or object (named)
//   GET  /fn/hello/<name>?param=value

// MetaCall's benchmark function: string concatenation.
export function merge(a, b) {
  return a + b;
}

// Named arguments and defaults: GET /fn/hello/greet?name=Ada
export function greet(name, greeting = "Hello") {
  return `${greeting}, ${name}!`;
}

// Async functions are awaited; other calls keep running meanwhile.
export async function later(value, ms = 100) {
  await new Promise((resolve) => setTimeout(resolve, ms));
  return { value, waited_ms: ms };
}

// A thrown error becomes a 500 with the message and the stack.
export function fail(message = "something went wrong") {
  throw new Error(message);
}

// console.* goes to the node's log, tagged with deployment, function and request id.
export function shout(text) {
  console.log("shouting", text);
  return String(text).toUpperCase();
}
