-- luacheck (Debian package lua-check): `luacheck .` from editor-clients/neovim
std = "luajit"
globals = { "vim" }
max_line_length = 120
