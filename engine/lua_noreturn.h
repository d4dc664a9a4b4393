/* lua_noreturn.h — Lua's error functions, declared as what they are.
 *
 * lua_error, luaL_error, luaL_argerror and luaL_typeerror never return (they
 * longjmp to the enclosing pcall), but lua.h and lauxlib.h declare them as
 * plain int functions.  Redeclared here with noreturn, so the compiler and
 * clang-tidy's analyzer know that the code after `if (!p) luaL_error(...)`
 * runs only with p set.  Include after lua.h and lauxlib.h.
 */
#ifndef IPPC_ENGINE_LUA_NORETURN_H
#define IPPC_ENGINE_LUA_NORETURN_H

#include <lauxlib.h>
#include <lua.h>

extern int lua_error(lua_State *L) __attribute__((noreturn));
extern int luaL_error(lua_State *L, const char *fmt, ...) __attribute__((noreturn));
extern int luaL_argerror(lua_State *L, int arg, const char *extramsg) __attribute__((noreturn));
extern int luaL_typeerror(lua_State *L, int arg, const char *tname) __attribute__((noreturn));

#endif
