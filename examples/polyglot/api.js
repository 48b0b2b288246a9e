// The polyglot chain: JavaScript -> Python (-> C) -> Lua -> template, each
// step a normal function call to a function written in another language.
//   curl -d '{"title": "Release notes", "items": ["fast", "polyglot"]}' \
//        localhost:8080/fn/polyglot/page
import { render } from "fnmesh:polyglot";   // another export of this deployment (the template)

export async function page(title, items = []) {
  // Python summarises the items (asking C for their lengths in characters)...
  const stats = await fnmesh.call("polyglot/summarise", items);
  // ...Lua formats the heading...
  const heading = await fnmesh.call("polyglot/heading", title, stats.count);
  // ...and the Mustache template renders the HTML.
  return await render({ heading, items: stats.items, longest: stats.longest });
}
