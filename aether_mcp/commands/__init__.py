"""What the ways in offer beside spawning: install and uninstall, agents sync, doctor's checks, costs, the demo.

The MCP server and the command line call these; nothing here reads a command line or speaks MCP.
"""
