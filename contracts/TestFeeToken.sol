// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// A fee-on-transfer ERC-20: every `transfer` and `transferFrom` burns `feeBps` basis points of the
/// amount, so the recipient receives `value - value * feeBps / 10000` (rounded in the recipient's
/// favour: the fee rounds down). Minting is free of fee. Used to check that token valuation (e.g.
/// against a Uniswap pair) does not trust a nominal amount the pool never receives.
/// `mint` is open: this is test money on a local chain.
contract TestFeeToken {
    string public name;
    string public symbol;
    uint8 public immutable decimals;
    uint16 public immutable feeBps;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    constructor(string memory name_, string memory symbol_, uint8 decimals_, uint16 feeBps_) {
        require(feeBps_ <= 10000, "TestFeeToken: fee above 100%");
        name = name_;
        symbol = symbol_;
        decimals = decimals_;
        feeBps = feeBps_;
    }

    function mint(address to, uint256 value) external {
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        require(allowed >= value, "ERC20: insufficient allowance");
        if (allowed != type(uint256).max) {
            allowance[from][msg.sender] = allowed - value;
        }
        _transfer(from, to, value);
        return true;
    }

    /// The sender is debited `value`; the recipient is credited `value` minus the burnt fee.
    function _transfer(address from, address to, uint256 value) internal {
        require(to != address(0), "ERC20: transfer to the zero address");
        require(balanceOf[from] >= value, "ERC20: transfer amount exceeds balance");
        uint256 fee = (value * feeBps) / 10000;
        balanceOf[from] -= value;
        balanceOf[to] += value - fee;
        emit Transfer(from, to, value - fee);
        if (fee != 0) {
            totalSupply -= fee;
            emit Transfer(from, address(0), fee);
        }
    }
}
